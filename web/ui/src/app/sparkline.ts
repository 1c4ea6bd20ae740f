// A tiny canvas sparkline (no chart library: hundreds of them on a page).

import { themeColors, withAlpha } from "./theme";

export interface SparkData {
  t: number[];
  v: number[];
  min?: number[];
  max?: number[];
}

/** Draws data on canvas over [from, to] (ms); muted when dim. */
export function drawSparkline(canvas: HTMLCanvasElement, data: SparkData | null, from: number, to: number, dim = false): void {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const hgt = canvas.clientHeight;
  if (!w || !hgt) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  if (!data || data.t.length === 0) {
    const c = themeColors();
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, hgt / 2);
    ctx.lineTo(w, hgt / 2);
    ctx.stroke();
    return;
  }
  const lo = data.min ?? data.v;
  const hi = data.max ?? data.v;
  let yMin = Infinity;
  let yMax = -Infinity;
  for (let i = 0; i < data.t.length; i++) {
    if (lo[i] < yMin) yMin = lo[i];
    if (hi[i] > yMax) yMax = hi[i];
  }
  if (yMax === yMin) {
    yMax += 1;
    yMin -= 1;
  }
  const pad = 2;
  const x = (t: number) => ((t - from) / (to - from)) * w;
  const y = (v: number) => pad + (1 - (v - yMin) / (yMax - yMin)) * (hgt - 2 * pad);
  const colors = themeColors();
  const color = dim ? colors.muted : colors.palette[0];
  if (data.min && data.max) {
    ctx.fillStyle = withAlpha(color, 0.18);
    ctx.beginPath();
    for (let i = 0; i < data.t.length; i++) ctx.lineTo(x(data.t[i]), y(data.max[i]));
    for (let i = data.t.length - 1; i >= 0; i--) ctx.lineTo(x(data.t[i]), y(data.min[i]));
    ctx.closePath();
    ctx.fill();
  }
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.25;
  ctx.lineJoin = "round";
  ctx.beginPath();
  for (let i = 0; i < data.t.length; i++) {
    const px = x(data.t[i]);
    const py = y(data.v[i]);
    if (i === 0) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
  }
  ctx.stroke();
}
