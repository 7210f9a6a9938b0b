"""Figures of docs/synthetic.md from the result.json files of `protrnn synthetic` runs.

Usage: python benchmarks/plot_synthetic.py RUNS_DIR [-o docs/figures]

RUNS_DIR holds one folder per run, named as in docs/synthetic.md ("Reproduce"): lstm, lstm_k16, gru, gru_k16, rnn,
rnn_k16 (the main figure) and lstm_chrono, lstm_noortho, rnn_noortho, lstm_noclip, rnn_noclip (the knobs). Missing
runs are skipped. Writes synthetic_reach.png (accuracy versus distance) and synthetic_jacobians.png (recurrent
Jacobian norms versus lag, and per-step gradient norms with and without clipping), and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from protrnn.diagnostics.synthetic import CELL_COLOURS, draw_accuracy  # noqa: E402

MAIN = [("lstm", "lstm"), ("lstm_k16", "lstm, k=16"), ("gru", "gru"), ("gru_k16", "gru, k=16"),
        ("rnn", "rnn"), ("rnn_k16", "rnn, k=16")]
KNOBS = [("lstm", "lstm (forget bias 1, orthogonal, clip 1)", {}),
         ("lstm_chrono", "lstm, chrono init", {"linestyle": "-.", "marker": "s"}),
         ("lstm_noortho", "lstm, no orthogonal init", {"linestyle": ":", "marker": "^"}),
         ("lstm_noclip", "lstm, no clipping", {"linestyle": "--", "marker": "x"}),
         ("rnn", "rnn (orthogonal, clip 1)", {}),
         ("rnn_noortho", "rnn, no orthogonal init", {"linestyle": ":", "marker": "^"}),
         ("rnn_noclip", "rnn, no clipping", {"linestyle": "--", "marker": "x"})]
JACOBIAN_DISTANCE = 32  # trained curves and gradient traces are shown for the models trained at this distance


def load(runs: Path, name: str) -> dict | None:
    path = runs / name / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def row_at(result: dict, distance: int) -> dict | None:
    return next((r for r in result["distances"] if r["distance"] == distance), None)


def table(runs: Path) -> str:
    names = [n for n, _ in MAIN] + [n for n, _, _ in KNOBS if n not in dict(MAIN)]
    lines = []
    for name in names:
        result = load(runs, name)
        if result is None:
            continue
        if not lines:
            distances = [r["distance"] for r in result["distances"]]
            lines.append("| run | " + " | ".join(f"d={d}" for d in distances) + " | reach | time |")
            lines.append("|---|" + "---|" * (len(distances) + 2))
        cells = [f"{r['accuracy']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]"
                 for r in result["distances"]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {result['reach']} | {result['total_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("-o", "--outdir", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    main_runs = [(label, r) for name, label in MAIN if (r := load(args.runs, name))]
    draw_accuracy(left, main_runs)
    left.set_title("cells, with and without a gradient horizon of 16")
    knob_runs = [(label, r, style) for name, label, style in KNOBS if (r := load(args.runs, name))]
    draw_accuracy(right, [(label, r) for label, r, _ in knob_runs], styles=[s for _, _, s in knob_runs])
    right.set_title("knobs (lstm and tanh-rnn, no horizon)")
    steps = main_runs[0][1]["settings"]["steps"] if main_runs else "?"
    fig.suptitle(f"Planted-distance recall: one model per distance, {steps} Adam steps each, 4 symbols")
    fig.tight_layout()
    fig.savefig(args.outdir / "synthetic_reach.png", dpi=110)
    plt.close(fig)

    fig, (jac_ax, grad_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, label, style in [("lstm", "lstm", "-"), ("lstm_noortho", "lstm, no orth.", ":"),
                               ("gru", "gru", "-"), ("rnn", "rnn", "-"), ("rnn_noortho", "rnn, no orth.", ":")]:
        result = load(args.runs, name)
        if result is None:
            continue
        colour = CELL_COLOURS[result["cell"]]
        init = result["jacobian_init"]
        jac_ax.plot(init["lags"], init["geometric_mean"], color=colour, linestyle=style, alpha=0.45,
                    label=f"{label}: init")
        trained = (row_at(result, JACOBIAN_DISTANCE) or {}).get("jacobian_trained")
        if trained:
            jac_ax.plot(trained["lags"], trained["geometric_mean"], color=colour, linestyle=style, linewidth=2.2,
                        label=f"{label}: trained d={JACOBIAN_DISTANCE}")
    jac_ax.set_yscale("log")
    jac_ax.set_xlabel("lag t − s")
    jac_ax.set_ylabel("‖∂z_t/∂z_s‖₂ (geometric mean over starts)")
    jac_ax.set_title("first-layer forward Jacobian products (thin: init, thick: trained)")
    jac_ax.axhline(1.0, color="grey", linestyle=":")
    jac_ax.grid(alpha=0.3)
    jac_ax.legend(fontsize=7, ncol=2)
    for name, label, style in [("lstm", "lstm, clip 1", "-"), ("lstm_noclip", "lstm, no clip", "--"),
                               ("rnn", "rnn, clip 1", "-"), ("rnn_noclip", "rnn, no clip", "--")]:
        result = load(args.runs, name)
        row = row_at(result, JACOBIAN_DISTANCE) if result else None
        if row is None:
            continue
        grad_ax.plot([v if v is not None else float("nan") for v in row["grad_norms"]],
                     color=CELL_COLOURS[result["cell"]], linestyle=style, linewidth=0.8, alpha=0.8, label=label)
    grad_ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.5, label="clip threshold")
    grad_ax.set_yscale("log")
    grad_ax.set_xlabel("training step")
    grad_ax.set_ylabel("total gradient norm before clipping")
    grad_ax.set_title(f"gradient norm per step (models trained at d={JACOBIAN_DISTANCE})")
    grad_ax.grid(alpha=0.3)
    grad_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.outdir / "synthetic_jacobians.png", dpi=110)
    plt.close(fig)
    print(table(args.runs))


if __name__ == "__main__":
    main()
