package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

var inf = math.Inf(1)

// nearestRank returns the p quantile of vs by the nearest-rank method.
func nearestRank(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// median is the middle value of vs (the lower one of the two middles), or
// NaN when vs is empty: repeats are summarised by it.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// parseFloorLine reads the CPU per write out of bench floor's line
// "floor: ...: 1.23 µs CPU and ...".
func parseFloorLine(out string) (float64, error) {
	head, _, ok := strings.Cut(out, " µs CPU")
	if !ok {
		return 0, errNoFloor
	}
	f := strings.Fields(head)
	if len(f) == 0 {
		return 0, errNoFloor
	}
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		return 0, errors.Join(errNoFloor, err)
	}
	return v, nil
}

// figure is one row of the table for a scenario: a name, a unit, and how
// to read it from a run.
type figure struct {
	name     string
	unit     string
	decimals int
	cpu      bool // a CPU per delivery: also shown as a multiple of the floor
	noRatio  bool // counts that must be 0: a ratio means nothing
	get      func(runResult) float64
}

func figuresFor(sc scenario) []figure {
	cpu := figure{name: "server CPU per delivery", unit: "µs", decimals: 2, cpu: true, get: func(r runResult) float64 { return r.ServerCPUUS }}
	lost := figure{name: "lost", unit: "", noRatio: true, get: func(r runResult) float64 { return float64(r.Lost) }}
	dups := figure{name: "duplicates", unit: "", noRatio: true, get: func(r runResult) float64 { return float64(r.Duplicates) }}
	switch sc.group {
	case "idle":
		return []figure{
			{name: "RSS per idle connection", unit: "KB", decimals: 2, get: func(r runResult) float64 { return r.RSSKBPerConn }},
			{name: "connect + identify rate", unit: "conn/s", decimals: 0, get: func(r runResult) float64 { return r.ConnectRate }},
			{name: "idle CPU (settle)", unit: "% core", decimals: 1, get: func(r runResult) float64 { return r.IdleCPUPct }},
		}
	case "targeted":
		return []figure{cpu,
			{name: "latency p50", unit: "ms", decimals: 3, get: func(r runResult) float64 { return r.P50MS }},
			{name: "latency p99", unit: "ms", decimals: 3, get: func(r runResult) float64 { return r.P99MS }},
			lost, dups,
			{name: "publisher lag p50 / max", unit: "ms", decimals: 3, noRatio: true, get: func(r runResult) float64 { return r.LagMaxMS }},
		}
	case "broadcast":
		return []figure{cpu,
			{name: "to the last session p50", unit: "ms", decimals: 3, get: func(r runResult) float64 { return r.LastP50MS }},
			{name: "to the last session p99", unit: "ms", decimals: 3, get: func(r runResult) float64 { return r.LastP99MS }},
			lost, dups,
		}
	case "scaling":
		return []figure{cpu}
	case "nats":
		return []figure{cpu,
			{name: "NATS server CPU per delivery", unit: "µs", decimals: 2, cpu: true, get: func(r runResult) float64 { return r.NATSCPUUS }},
			{name: "server + NATS CPU per delivery", unit: "µs", decimals: 2, cpu: true, get: func(r runResult) float64 { return r.ServerCPUUS + r.NATSCPUUS }},
			{name: "latency p99", unit: "ms", decimals: 3, get: func(r runResult) float64 { return r.P99MS }},
			lost, dups,
		}
	}
	return nil
}

// tableRow is one line of the comparison: a figure's median over the
// repeats for each server (NaN: not measured).
type tableRow struct {
	title   string
	fig     figure
	notify  float64
	cf      float64
	lagP50  [2]float64 // the publisher lag row shows p50 / max
	repeats int
}

func buildRows(scs []scenario, results []runResult) []tableRow {
	var rows []tableRow
	for _, sc := range scs {
		var byServer [2][]runResult
		for _, r := range results {
			if r.Scenario != sc.key {
				continue
			}
			if r.Server == serverNotify {
				byServer[0] = append(byServer[0], r)
			} else {
				byServer[1] = append(byServer[1], r)
			}
		}
		for _, fig := range figuresFor(sc) {
			row := tableRow{title: sc.title, fig: fig, repeats: max(len(byServer[0]), len(byServer[1]))}
			vals := func(rs []runResult, get func(runResult) float64) float64 {
				var vs []float64
				for _, r := range rs {
					vs = append(vs, get(r))
				}
				return median(vs)
			}
			row.notify, row.cf = vals(byServer[0], fig.get), vals(byServer[1], fig.get)
			lag := func(r runResult) float64 { return r.LagP50MS }
			row.lagP50 = [2]float64{vals(byServer[0], lag), vals(byServer[1], lag)}
			rows = append(rows, row)
		}
	}
	return rows
}

// formatNum prints v with d decimals, "-" when it is not measured and
// "∞" when it never happened.
func formatNum(v float64, d int) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.IsInf(v, 1):
		return "∞"
	}
	return strconv.FormatFloat(v, 'f', d, 64)
}

// ratioCell is a/b with two decimals, or "-" when either is missing, not
// finite, or b is 0.
func ratioCell(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) || b == 0 {
		return "-"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64)
}

// writeTable prints the rows as a markdown table, with the floor's row
// first when it was measured (floorUS > 0) and, for every CPU figure, its
// multiple of the floor.
func writeTable(w io.Writer, rows []tableRow, floorUS float64, cfName string) {
	fmt.Fprintf(w, "| Scenario | Figure | notify-worker | %s | notify / Centrifugo | notify / floor | Centrifugo / floor |\n", cfName)
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	if floorUS > 0 {
		f := formatNum(floorUS, 2)
		fmt.Fprintf(w, "| floor | CPU per loopback write (µs) | %s | %s | - | 1 | 1 |\n", f, f)
	}
	for _, r := range rows {
		name := r.fig.name
		if r.fig.unit != "" {
			name += " (" + r.fig.unit + ")"
		}
		n, c := formatNum(r.notify, r.fig.decimals), formatNum(r.cf, r.fig.decimals)
		if strings.HasPrefix(r.fig.name, "publisher lag") {
			n = formatNum(r.lagP50[0], r.fig.decimals) + " / " + n
			c = formatNum(r.lagP50[1], r.fig.decimals) + " / " + c
		}
		ratio := ratioCell(r.notify, r.cf)
		if r.fig.noRatio {
			ratio = "-"
		}
		nf, cf := "-", "-"
		if r.fig.cpu && floorUS > 0 {
			nf, cf = ratioCell(r.notify, floorUS), ratioCell(r.cf, floorUS)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.title, name, n, c, ratio, nf, cf)
	}
}

// writeRuns prints, per run, the machine's load: the figures of a run on a
// busy machine are worth less.
func writeRuns(w io.Writer, results []runResult) {
	fmt.Fprintln(w, "| Scenario | Server | Repeat | Connected | Load average before | after | Machine busy in window | Busiest client process | Server CPU in window |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---|---:|---:|---:|")
	for _, r := range results {
		busy := "-"
		if r.WindowS > 0 {
			busy = fmt.Sprintf("%.0f%%", 100*r.Busy)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d/%d | %s | %s | %s | %.0f%% | %.0f%% |\n",
			r.Scenario, r.Server, r.Repeat, r.Connected, r.Conns, r.LoadBefore, r.LoadAfter, busy, r.ClientCPUMax, r.ServerCPU)
	}
}
