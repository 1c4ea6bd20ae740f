// The bench report's charts, drawn with uPlot from the JSON in #data. The
// table is plain HTML, so the page still reads if this script fails.
(function () {
  "use strict";
  const report = JSON.parse(document.getElementById("data").textContent);
  const results = report.results || [];
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const palette = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => color("--s" + i));
  const axisStroke = color("--muted");
  const gridStroke = color("--grid");
  const plots = [];

  // Three significant digits without trailing zeros, for axis ticks.
  const short = (v) => String(+v.toPrecision(3));
  function fmtRate(v) {
    if (v == null) return "–";
    let s = "";
    for (const suffix of ["k", "M", "G"]) {
      if (Math.abs(v) < 999.5) break;
      v /= 1000;
      s = suffix;
    }
    return short(v) + s;
  }
  function fmtMs(v) {
    if (v == null) return "–";
    return Math.abs(v) < 999.5 ? short(v) + " ms" : short(v / 1000) + " s";
  }
  function fmtShare(v) {
    return v == null ? "–" : (v * 100).toFixed(v >= 0.995 && v < 1 ? 1 : 0) + "%";
  }

  function axis(label, values) {
    return {
      label,
      stroke: axisStroke,
      grid: { stroke: gridStroke, width: 1 },
      ticks: { stroke: gridStroke, width: 1 },
      // uPlot passes null for the splits a log axis leaves unlabelled.
      values: (u, splits) => splits.map((v) => (v == null ? null : values(v))),
    };
  }

  // Each plot takes its width from its container, so it fits a phone, and
  // follows the window when it is resized or rotated.
  function size(el) {
    const width = Math.max(200, el.clientWidth);
    return { width, height: Math.round(Math.min(340, Math.max(240, width * 0.45))) };
  }
  function plot(el, opts, data) {
    plots.push({ el, u: new uPlot(Object.assign(opts, size(el)), data, el) });
  }
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      for (const p of plots) p.u.setSize(size(p.el));
    });
  });

  function line(label, stroke) {
    return { label, stroke, width: 1.5, spanGaps: true, points: { show: false } };
  }

  const tp = document.getElementById("throughput");
  if (tp) {
    for (const r of results) {
      const pts = r.throughput || [];
      if (pts.length === 0) continue;
      const h = document.createElement("h3");
      h.textContent = r.scenario;
      const el = document.createElement("div");
      el.className = "plot";
      tp.append(h, el);
      const series = [{ label: "time", value: (u, v) => (v == null ? "–" : short(v) + " s") }];
      const data = [pts.map((p) => p.t)];
      series.push(Object.assign(line("sent msg/s", palette[0]), { value: (u, v) => fmtRate(v) }));
      data.push(pts.map((p) => p.sent));
      // Accepted is all zero when the server's metrics were unavailable;
      // a flat line at zero would read as "the server accepted nothing".
      if (pts.some((p) => p.accepted > 0)) {
        series.push(Object.assign(line("accepted msg/s", palette[1]), { value: (u, v) => fmtRate(v) }));
        data.push(pts.map((p) => p.accepted));
      }
      plot(el, {
        scales: { x: { time: false }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] } },
        series,
        axes: [axis("seconds", short), axis("msg/s", fmtRate)],
      }, data);
    }
  }

  const lat = document.getElementById("latency");
  if (lat) {
    const tables = [];
    const series = [{ label: "latency", value: (u, v) => fmtMs(v) }];
    for (const r of results) {
      // A log axis has no place for zero: a point at 0 ms cannot be drawn.
      const pts = (r.latencyCdf || []).filter((p) => p.ms > 0);
      if (pts.length === 0) continue;
      tables.push([pts.map((p) => p.ms), pts.map((p) => p.q)]);
      const s = line(r.scenario, palette[(series.length - 1) % palette.length]);
      if (series.length > palette.length) s.dash = [6, 3];
      series.push(Object.assign(s, { value: (u, v) => fmtShare(v) }));
    }
    if (tables.length > 0) {
      plot(lat, {
        scales: { x: { time: false, distr: 3, log: 10 }, y: { range: [0, 1] } },
        series,
        axes: [axis("latency", fmtMs), axis("share of points", fmtShare)],
      }, uPlot.join(tables));
    }
  }
})();
