"""The pictures ``ipamctl simulate --plot`` and ``ipamctl recommend --plot`` draw (matplotlib,
imported only when a picture is drawn; the commands check it is installed before the run).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from adapters.ipamctl.recommend import Candidate, Verdict, frontier, qualifies
from adapters.simulator import Measures
from adapters.simulator.workload import DEL, PodEvent


def plot_simulation(measures: Measures, path: str, title: str,
                    events: Sequence[PodEvent] = ()) -> None:  # fmt: skip
    """Top: addresses held / assigned (the gap idle) / cooling over time, and the nodes
    running when nodes joined or left. Bottom: pods arriving each bin (up; red: those that
    waited for an address) and leaving (down, from ``events``), and on the right axis the
    longest wait in each bin against the 5 s line; the wait figures written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    samples = measures.samples
    t = [s.t / 60.0 for s in samples]
    held, assigned = [s.held for s in samples], [s.assigned for s in samples]
    v6 = [s.ipv6_assigned for s in samples]
    if measures.families == "ipv6":  # no IPv4 pool: the pods' IPv6 addresses, from the /80s
        top.plot(t, v6, label="IPv6 addresses assigned to pods (from each node's /80)",
                 color="tab:green")  # fmt: skip
        held = v6
    else:
        top.plot(t, held, label="held on the ENIs", color="tab:blue")
        top.plot(t, assigned, label="assigned to pods", color="tab:green")
        top.fill_between(t, assigned, held, color="tab:orange", alpha=0.25,
                         label="idle (held, not assigned)")  # fmt: skip
        top.plot(t, [s.cooling for s in samples], label="cooling (30 s after release)",
                 color="tab:gray", linestyle=":")  # fmt: skip
        if measures.families == "dual":
            top.plot(t, v6, label="IPv6 addresses assigned (dual stack)", color="black",
                     linestyle="--", linewidth=0.9)  # fmt: skip
    top.set_ylabel("addresses (whole cluster" + (", every card)" if measures.by_card else ")"))
    top.set_ylim(0, max([*held, 1]) * 1.25)  # room for the legend and the box above the lines
    handles, labels = top.get_legend_handles_labels()
    if len({s.nodes for s in samples}) > 1:  # nodes joined or left: how many ran when
        fleet = top.twinx()
        fleet.step(t, [s.nodes for s in samples], where="post", color="tab:purple",
                   linewidth=1.2, alpha=0.8, label="nodes running (right)")  # fmt: skip
        fleet.set_ylim(0, max(s.nodes for s in samples) * 1.25)
        fleet.set_ylabel("nodes running", color="tab:purple")
        more = fleet.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    top.legend(handles, labels, loc="upper left", fontsize=8, ncol=2)
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    fleet_note = (f"\n{measures.nodes_joined} nodes joined, {measures.nodes_left} left; "
                  f"{measures.pods_drained} pods drained, {measures.pods_rescheduled} "
                  "rescheduled" if measures.nodes_joined or measures.nodes_left else "")
    top.text(0.99, 0.97, family_note(measures) + f"EC2 mutating calls {measures.mutating_total:,}"
             f" ({measures.throttled_total:,} throttled)" + fleet_note,
             transform=top.transAxes, ha="right", va="top", fontsize=8,
             bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})  # fmt: skip

    span = max([s.t for s in samples] + [a for a, _ in measures.waits] + [60.0])
    bin_s = 60.0 if span <= 4 * 3600 else 600.0
    nbins = int(span // bin_s) + 1
    arrived = [0] * nbins
    delayed = [0] * nbins
    left = [0] * nbins
    longest = [0.0] * nbins
    for at, w in measures.waits:
        i = min(int(at // bin_s), nbins - 1)
        arrived[i] += 1
        if w > 0:
            delayed[i] += 1
            longest[i] = max(longest[i], w)
    for e in events:
        if e.event == DEL and 0 <= e.time <= span:
            left[min(int(e.time // bin_s), nbins - 1)] -= 1
    lefts = [i * bin_s / 60.0 for i in range(nbins)]
    width = bin_s / 60.0
    per = f"{bin_s / 60:g} min"
    bottom.bar(lefts, arrived, width=width, align="edge", color="tab:gray", alpha=0.5,
               label=f"pods arriving per {per}")  # fmt: skip
    bottom.bar(lefts, delayed, width=width, align="edge", color="tab:red", alpha=0.85,
               label="... of which waited for an address")  # fmt: skip
    if any(left):
        bottom.bar(lefts, left, width=width, align="edge", color="tab:cyan", alpha=0.5,
                   label=f"pods leaving per {per} (down)")  # fmt: skip
    bottom.axhline(0, color="black", linewidth=0.6)
    bottom.set_ylabel(f"pods per {per}")
    bottom.set_xlabel("simulated minutes")
    bottom.grid(alpha=0.3)
    down = -min([*left, 0]) * 1.15
    right = bottom.twinx()
    waited = [w for _a, w in measures.waits if w > 0]
    pts = [(lefts[i] + width / 2, longest[i]) for i in range(nbins) if delayed[i]]
    right.plot([x for x, _ in pts], [y for _, y in pts], "o", color="black", markersize=3.5,
               label="longest wait in the bin (s, right)")  # fmt: skip
    right.axhline(measures.wait_threshold_s, color="red", linewidth=0.8, linestyle="--",
                  label=f"{measures.wait_threshold_s:g} s (a CNI ADD times out near here)")
    high = max([*waited, measures.wait_threshold_s * 1.2]) * 1.1
    right.set_ylabel("address wait (s)")
    handles = bottom.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = bottom.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    # the key and the figures go under the panel, where no bar can be hidden behind them
    bottom.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=8,
                  ncol=3, frameon=False)  # fmt: skip
    summary = (
        f"{len(waited):,} of {measures.pods_served + measures.pods_unserved:,} pods waited; "
        f"p50 {measures.wait_p50_s:.2f} s, p99 {measures.wait_p99_s:.2f} s, "
        f"max {measures.wait_max_s:.2f} s; {measures.pods_over_threshold:,} over "
        f"{measures.wait_threshold_s:g} s; {measures.pods_unserved:,} never served"
        if waited or measures.pods_unserved else "no pod waited for an address"
    )  # fmt: skip
    for itype, by in measures.by_type.items():
        summary += (f"\n{itype} ({int(by['nodes'])} nodes): p99 {by['wait_p99_s']:.2f} s, "
                    f"max {by['wait_max_s']:.2f} s, {int(by['pods_unserved'])} never served, "
                    f"idle {by['idle_address_hours']:,.1f} address-hours")  # fmt: skip
    rows = 1 + (len(handles) - 1) // 3
    bottom.text(0.0, -0.2 - 0.075 * rows, "address waits: " + summary, transform=bottom.transAxes,
                ha="left", va="top", fontsize=8.5)  # fmt: skip
    up = max([*arrived, 1]) * 1.15
    bottom.set_ylim(-down, up)
    right.set_ylim(-high * down / up, high)  # the wait axis's zero on the bars' zero
    right.set_yticks([y for y in right.get_yticks() if 0 <= y <= high])
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def family_note(m: Measures) -> str:
    """The box's first lines: idle address-hours, or IPv6's and multi-NIC's figures."""
    if m.families == "ipv6":
        note = (f"IPv6 single stack: {m.ipv6_prefixes_peak:,} /80 prefixes, "
                f"{m.ipv6_prefix_calls_max_per_node} AssignIpv6Addresses a node;\n"
                f"{m.mutating_after_ipv6_prefix:,} EC2 calls after each node's /80; "
                "no warm pool (warm targets ignored)\n")  # fmt: skip
    else:
        note = f"idle address-hours {m.idle_address_hours:,.1f}\n"
    if m.multi_nic_fraction or m.by_card:
        note += (f"multi-NIC pods {m.multi_nic_pods:,} ({m.multi_nic_interfaces:,} "
                 f"interfaces), ADDs retried {m.add_retries:,}\n")  # fmt: skip
    return note


def plot_recommendation(candidates: Sequence[Candidate], verdict: Verdict, max_p99_s: float,
                        path: str, title: str) -> None:  # fmt: skip
    """Idle address-hours against p99 wait, one numbered point a setting (the key on the
    right), marker area by EC2 calls; the idle-vs-p99 frontier as a staircase, the
    ``--max-p99`` line, the default and the recommendation marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = verdict.best
    front = frontier(candidates)
    key_in = max(len(c.label) for c in candidates) * 0.075 + 2.6  # the table's width, inches
    fig, (ax, key) = plt.subplots(1, 2, figsize=(8.5 + key_in, 6.5),
                                  gridspec_kw={"width_ratios": [8.5, key_in]})  # fmt: skip
    top = max((c.measures.mutating_total for c in candidates), default=1) or 1
    xs = [c.measures.idle_address_hours for c in candidates]
    ys = [c.measures.wait_p99_s for c in candidates]
    # the 2-D frontier (idle vs p99): sorted by idle, each step lowers p99 (monotone)
    stairs: list[tuple[float, float]] = []
    for x, y in sorted(zip(xs, ys, strict=True)):
        if not stairs or y < stairs[-1][1]:
            stairs.append((x, y))
    ax.step([x for x, _ in stairs], [y for _, y in stairs], where="post", color="tab:blue",
            linewidth=1.2, alpha=0.7, label="frontier: least p99 for the idle addresses")
    ax.axhline(max_p99_s, color="red", linestyle="--", linewidth=1,
               label=f"--max-p99 {max_p99_s:g} s")  # fmt: skip
    span_x = (max(xs) - min(0.0, min(xs))) or 1.0
    span_y = (max([*ys, max_p99_s]) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []  # label spots, in axis fractions
    for i, c in enumerate(candidates, start=1):
        m = c.measures
        on = c in front
        color = "tab:green" if qualifies(c, max_p99_s) else "tab:red"
        marker = "s" if c.is_default() else "o"
        ax.scatter([m.idle_address_hours], [m.wait_p99_s],
                   s=40 + 500 * m.mutating_total / top, marker=marker, color=color,
                   alpha=0.75 if on else 0.3, edgecolors="black" if c is best else "none",
                   linewidths=2.5, zorder=3)  # fmt: skip
        fx, fy = m.idle_address_hours / span_x, m.wait_p99_s / span_y
        k = 0
        while any(abs(fx - px) < 0.03 and abs(fy + 0.035 * k - py) < 0.03 for px, py in placed):
            k += 1
        placed.append((fx, fy + 0.035 * k))
        leader = {"arrowstyle": "-", "lw": 0.6, "color": "gray"} if k else None
        r = (40 + 500 * m.mutating_total / top) ** 0.5 / 2  # the marker's radius, points
        ax.annotate(str(i), (m.idle_address_hours, m.wait_p99_s), fontsize=9,
                    fontweight="bold", xytext=(r * 0.7, r * 0.7 + 13 * k), ha="left",
                    va="bottom", textcoords="offset points", zorder=4,
                    arrowprops=leader)  # fmt: skip (upper right: clear of the staircase)
    from matplotlib.lines import Line2D

    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], marker="o", linestyle="", color="tab:green", label="meets --max-p99"),
        Line2D([], [], marker="o", linestyle="", color="tab:red", label="does not"),
        Line2D([], [], marker="s", linestyle="", color="gray", label="upstream default"),
        Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black",
               markeredgewidth=2, label="recommended" if verdict.met else "closest (not met)"),
        Line2D([], [], marker="o", linestyle="", color="gray", alpha=0.3,
               label="off the frontier (faint); area: EC2 calls"),
    ]  # fmt: skip
    ax.set_xlabel("idle address-hours (held, not assigned; lower is better)")
    ax.set_ylabel("p99 address wait, s (lower is better)")
    high = max([*ys, max_p99_s])
    if max(ys) > 5 * max(max_p99_s, 0.1):  # a few slow settings would squash the rest
        lin = max(max_p99_s, 0.1)
        ax.set_yscale("symlog", linthresh=lin)  # linear up to --max-p99, logarithmic above
        ax.set_ylim(-0.06 * lin, high * 2.5)
        steps = [f * lin for f in (0, 0.25, 0.5, 0.75, 1)]
        steps += [f * 10**e for e in range(-1, 5) for f in (1, 2, 5) if lin < f * 10**e <= high * 2]
        ax.set_yticks(steps, [f"{v:g}" for v in steps])
        ax.set_ylabel("p99 address wait, s (lower is better; logarithmic above --max-p99)")
    else:
        ax.set_ylim(-0.04 * high, high * 1.15)
    ax.set_xlim(0, max(xs) * 1.08)
    if not verdict.met:
        why = "\n".join(textwrap.wrap(verdict.reasons[-1 if len(verdict.reasons) < 2 else 1],
                                       70))
        ax.text(0.02, 0.5, why, transform=ax.transAxes, fontsize=8, va="center",
                bbox={"boxstyle": "round", "facecolor": "mistyrose", "alpha": 0.9})
    ax.grid(alpha=0.3)
    head = "recommended" if verdict.met else "NOTHING MEETS THE REQUIREMENTS; closest"
    ax.set_title(f"{title}\n{head}: {best.label}", fontsize=10)
    key.axis("off")
    d = next((c for c in candidates if c.is_default()), candidates[0])
    width = max(len(c.label) for c in candidates)
    lines = [f"{'':>4} {'setting':<{width}} {'idle':>6} {'p99 s':>6} {'calls':>7}"]
    for i, c in enumerate(candidates, start=1):
        m = c.measures
        mark = ("=" if c.is_default() else "") + ("*" if c in front else "")
        lines.append(f"{i:>2}{mark:<2} {c.label:<{width}} {m.idle_address_hours:>6,.0f} "
                     f"{m.wait_p99_s:>6.2f} {m.mutating_total:>7,}")  # fmt: skip
    lines += ["", "= upstream default (WARM_ENI_TARGET=1)",
              "* on the frontier of idle, p99 and EC2 calls",
              "idle: address-hours held but not assigned",
              f"default: {d.measures.idle_address_hours:,.0f} idle, "
              f"{d.measures.mutating_total:,} calls"]
    table = key.text(0, 1, "\n".join(lines), family="monospace",
                     fontsize=8 if width < 40 else 7.5, va="top", transform=key.transAxes)
    fig.tight_layout()
    fig.canvas.draw()  # the table's height, to put the key right under it
    box = table.get_window_extent().transformed(key.transAxes.inverted())
    key.legend(handles=handles, loc="upper left", bbox_to_anchor=(-0.02, box.y0 - 0.03),
               fontsize=8, frameon=False)  # fmt: skip
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


