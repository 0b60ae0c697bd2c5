package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WriteSVG draws the added latency of the latency scenarios as a percentile
// plot: x is the percentile on the 1/(1−p) scale (50%, 90%, 99%, 99.9% …
// evenly spaced), y the added latency on a log scale. Colour is the target,
// the dash pattern the model latency.
func (rep *Report) WriteSVG(w io.Writer) error {
	const (
		width, height          = 860, 500
		left, right, top, foot = 70, 200, 40, 60
		plotW, plotH           = width - left - right, height - top - foot
	)
	colours := map[string]string{kindFloor: "#7f7f7f", kindAgentd: "#1f77b4", kindNaive: "#ff7f0e"}
	dashes := []string{"", "8 4", "2 3", "12 3 2 3"}

	// The axes' ranges: x up to the deepest percentile any curve reaches,
	// y in whole decades around every point.
	maxX, minY, maxY := 1.0, math.Inf(1), math.Inf(-1)
	for _, s := range rep.Latency {
		for _, p := range s.Curve {
			if p.P >= 1 {
				continue
			}
			maxX = max(maxX, -math.Log10(1-p.P))
			v := math.Max(p.Ms, 0.001)
			minY, maxY = math.Min(minY, v), math.Max(maxY, v)
		}
	}
	if math.IsInf(minY, 1) {
		minY, maxY = 0.01, 10
	}
	loY, hiY := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if hiY <= loY {
		hiY = loY + 1
	}
	maxX = math.Ceil(maxX)
	px := func(x float64) float64 { return left + x/maxX*plotW }
	py := func(ms float64) float64 {
		return top + plotH - (math.Log10(math.Max(ms, 0.001))-loY)/(hiY-loY)*plotH
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	title := fmt.Sprintf("Added latency by percentile at %.0f req/s (%s, %s)", rep.Settings.Rate, rep.Machine.GoVersion, rep.Date.Format("2006-01-02"))
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15">%s</text>`+"\n", left, html.EscapeString(title))

	// Grid and axes.
	for d := 0.0; d <= maxX; d++ {
		x := px(d)
		label := "0%"
		if d > 0 {
			label = strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.4f", 100*(1-math.Pow(10, -d))), "0"), ".") + "%"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, top, x, top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, top+plotH+18, label)
	}
	for e := loY; e <= hiY; e++ {
		y := py(math.Pow(10, e))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, left+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y, strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", math.Pow(10, e)), "0"), "."))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">percentile</text>`+"\n", left+plotW/2, height-18)
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">added latency, ms (log)</text>`+"\n", top+plotH/2)

	// One line per scenario, and its legend entry.
	latencies := map[float64]int{}
	for i, s := range rep.Latency {
		dash, ok := latencies[s.ModelLatencyMs]
		if !ok {
			dash = len(latencies) % len(dashes)
			latencies[s.ModelLatencyMs] = dash
		}
		var pts []string
		for _, p := range s.Curve {
			if p.P < 1 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(-math.Log10(1-p.P)), py(p.Ms)))
			}
		}
		style := fmt.Sprintf(`fill="none" stroke="%s" stroke-width="2"`, colours[s.Target])
		if dashes[dash] != "" {
			style += fmt.Sprintf(` stroke-dasharray="%s"`, dashes[dash])
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline %s points="%s"/>`+"\n", style, strings.Join(pts, " "))
		}
		ly := top + 10 + i*18
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" %s/>`+"\n", left+plotW+12, ly, left+plotW+42, ly, style)
		fmt.Fprintf(&b, `<text x="%d" y="%d" dominant-baseline="middle">%s, model %s</text>`+"\n", left+plotW+48, ly, s.Target, modelLabel(s.ModelLatencyMs))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
