// A small line chart on a <canvas>: a few series over time, a shared y scale from zero, gaps
// where samples are missing. The legend is HTML next to it and the canvas carries a text
// alternative with the latest values.

import { h } from "./dom.js";

const COLOURS = ["#1f6fd1", "#d9822b", "#2e9e5b", "#b03a8c", "#6b6b6b"];

export class Chart {
  /**
   * title: accessible name; series: [{key, label, colour?}]; span: seconds shown; unit: "/s"
   * or "".
   */
  constructor(title, series, { span = 600, unit = "" } = {}) {
    this.title = title;
    this.series = series.map((s, i) => ({ colour: COLOURS[i % COLOURS.length], ...s }));
    this.span = span;
    this.unit = unit;
    this.canvas = h("canvas", { role: "img", "aria-label": title, height: 160 });
    this.legend = h("ul", { class: "legend" });
    this.el = h("figure", { class: "chart" }, h("figcaption", {}, title), this.canvas, this.legend);
  }

  /** points: [{t: ms, values: {key: number}}], oldest first. */
  draw(points) {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = 160;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    canvas.style.height = `${height}px`;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const left = 48, right = 8, top = 8, bottom = 20;
    const now = points.length ? points[points.length - 1].t : Date.now();
    const from = now - this.span * 1000;
    const shown = points.filter((p) => p.t >= from);
    let max = 0;
    for (const p of shown) for (const s of this.series) max = Math.max(max, p.values[s.key] ?? 0);
    max = niceCeiling(max);
    const x = (t) => left + ((t - from) / (now - from || 1)) * (width - left - right);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);

    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#555";
    g.strokeStyle = "#e2e2e2";
    g.lineWidth = 1;
    for (const v of [0, max / 2, max]) {
      g.beginPath();
      g.moveTo(left, y(v) + 0.5);
      g.lineTo(width - right, y(v) + 0.5);
      g.stroke();
      g.textAlign = "right";
      g.textBaseline = "middle";
      g.fillText(formatTick(v) + this.unit, left - 4, y(v));
    }
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillText(`${Math.round(this.span / 60)} min ago`, left, height - 4);
    g.textAlign = "right";
    g.fillText("now", width - right, height - 4);

    g.lineWidth = 2;
    for (const s of this.series) {
      g.strokeStyle = s.colour;
      g.beginPath();
      let previous = null;
      for (const p of shown) {
        const v = p.values[s.key];
        if (v === undefined) {
          previous = null;
          continue;
        }
        // a gap of more than three polls is drawn as a gap, not as a straight line
        if (previous && p.t - previous.t <= 16000) g.lineTo(x(p.t), y(v));
        else g.moveTo(x(p.t), y(v));
        previous = p;
      }
      g.stroke();
    }

    const last = shown[shown.length - 1]?.values ?? {};
    this.legend.replaceChildren(
      ...this.series.map((s) =>
        h(
          "li",
          {},
          swatch(s.colour),
          `${s.label}: `,
          h("strong", {}, last[s.key] === undefined ? "–" : formatTick(last[s.key]) + this.unit),
        ),
      ),
    );
    const summary = this.series
      .map((s) => `${s.label} ${last[s.key] === undefined ? "unknown" : formatTick(last[s.key]) + this.unit}`)
      .join(", ");
    this.canvas.setAttribute("aria-label", `${this.title}, last ${Math.round(this.span / 60)} minutes; now: ${summary}`);
  }
}

/** A colour sample; set through the CSSOM, which a Content-Security-Policy allows. */
function swatch(colour) {
  const el = h("span", { class: "swatch" });
  el.style.background = colour;
  return el;
}

function niceCeiling(v) {
  if (v <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 5, 10]) if (v <= step * power) return step * power;
  return 10 * power;
}

function formatTick(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
