"""``debug.md``: the debugging flow's report (:mod:`tvmq.debugging`) for people, one section per step."""

from __future__ import annotations


def to_markdown(report: dict) -> str:
    lines = [f"# tvmq debug: {report['model']}", "", f"Target: `{report['target']}`; evaluated on "
             f"{report['eval_data']}.", ""]
    for entry in report["steps"]:
        lines += [f"## {entry['name']}: {entry['title']} ({entry['seconds']} s)", ""]
        lines += SECTIONS.get(entry["name"], _generic)(entry) + [""]
    return "\n".join(lines)


def _sanity(entry: dict) -> list[str]:
    lines = ["| check | identical to fp32 | max abs diff | samples |", "|---|---|---|---|"]
    for name in ("simulation_bypassed", "realize_bypassed"):
        check = entry[name]
        lines.append(f"| {name.replace('_', ' ')} | {'yes' if check['identical'] else 'NO'} | "
                     f"{check['max_abs_diff']:.3g} | {check['samples']} |")
    return lines


def _sides(entry: dict) -> list[str]:
    metric = entry["variants"][0]["metric"]
    lines = [f"Metric: {metric['name']} (fp32 {_value(metric, metric['fp32'])}). Side that hurts more: "
             f"**{entry['hurts']}**.", "", "| simulation | metric | top-1 agreement | output cosine |", "|---|---|---|---|"]
    rows = [(v["name"], v["metric"]) for v in entry["variants"]] + \
        [("the int8 module (integer arithmetic)", entry["int8_module"]["metric"])]
    for name, m in rows:
        lines.append(f"| {name} | {_value(m, m['value'])} | {_pct(m['top1_agreement'])} | {m['output_cosine']:.5f} |")
    check = entry["simulation_vs_int8"]
    tensors = check["tensors"]
    lines += ["", f"Simulation (8-bit both sides, teacher-forced with the int8 module's tensors) vs the int8 module: "
              f"{'agree' if check['agree'] else 'DISAGREE'} (every element within one quantization step)" +
              (f"; first node more than one step apart: `{check['first_beyond_one_step']}`." if not check["agree"]
               else ".")]
    if tensors and "drift_mean_steps" in tensors[0]:
        drift = max(tensors, key=lambda row: row["drift_mean_steps"])
        lines.append(f"Run freely, rounding ties carried downstream drift to a mean of {drift['drift_mean_steps']:.3f} "
                     f"steps at `{drift['node']}` (largest single element {max(r['drift_max_steps'] for r in tensors):.0f}"
                     f" steps).")
    return lines


def _per_layer(entry: dict) -> list[str]:
    verdict = "bit-identical to the int8 module on every tensor" if entry["deployed_matches_int8"] else \
        f"DIFFERS from the int8 module at {', '.join(entry['mismatched'][:5])}"
    lines = [f"{entry['samples']} samples, batch {entry['batch']}. Deployed module: {verdict}. Lowest SQNR first.",
             "", "| node | tensor | SQNR sim dB | SQNR int8 dB | SQNR deployed dB | cosine sim | cosine int8 | "
             "cosine deployed |", "|---|---|---|---|---|---|---|---|"]
    for row in sorted(entry["layers"], key=lambda r: (r["sqnr_db_int8"] is None, r["sqnr_db_int8"] or 0.0)):
        lines.append(f"| {row['node']} | {row['tensor']} | {_db(row['sqnr_db_simulated'])} | "
                     f"{_db(row['sqnr_db_int8'])} | {_db(row['sqnr_db_deployed'])} | {row['cosine_simulated']:.5f} | "
                     f"{row['cosine_int8']:.5f} | {row['cosine_deployed']:.5f} |")
    return lines


def _sensitivity(entry: dict) -> list[str]:
    lines = [f"Metric: {entry['metric']} (fp32 {entry['fp32']:.5f}, all int8 {entry['int8']:.5f}); "
             f"{entry['variants']} variants. Most sensitive first.", "",
             "| node | metric recovered kept fp32 | metric lost int8 alone |", "|---|---|---|"]
    for row in entry["ranking"]:
        lines.append(f"| {row['name']} | {row['metric_drop']:+.5f} | {row.get('metric_drop_alone', 0.0):+.5f} |")
    return lines


def _generic(entry: dict) -> list[str]:
    return [f"{key}: {value}" for key, value in entry.items() if key not in ("name", "title", "seconds")]


def _value(metric: dict, value) -> str:
    return _pct(value) if metric["name"] == "top-1" else f"{value:.5f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _db(value) -> str:
    return "exact" if value is None else f"{value:.2f}"


SECTIONS = {"sanity": _sanity, "sides": _sides, "per_layer": _per_layer, "sensitivity": _sensitivity}
