// Overview: totals, the queued messages and the message rates of the last ten minutes (two
// charts), and the listeners. The history is kept here between polls and between visits; on
// the first visit it is seeded from the API's samples when it gives them (RabbitMQ does, for
// msg_rates_age/lengths_age).

import { get } from "../api.js";
import { Chart } from "../chart.js";
import { fill, h, num, stats, table } from "../dom.js";

const SPAN = 600; // seconds of history shown
// drawn in this order: the total first, so that ready (often equal) shows on top of it
const LENGTHS = [
  { key: "messages", label: "Total", colour: "#2e9e5b" },
  { key: "messages_ready", label: "Ready", colour: "#1f6fd1" },
  { key: "messages_unacknowledged", label: "Unacked", colour: "#d9822b" },
];
const RATES = [
  { key: "publish", label: "Publish" },
  { key: "confirm", label: "Publisher confirm" },
  { key: "deliver_get", label: "Deliver / get" },
  { key: "ack", label: "Consumer ack" },
  { key: "redeliver", label: "Redelivered" },
];

const history = { lengths: [], rates: [] };

function keep(list, point) {
  list.push(point);
  const from = point.t - SPAN * 1000;
  while (list.length && list[0].t < from) list.shift();
}

/** Queue lengths from samples: values as they are. Rates: differences of counters over time. */
function seed(o) {
  const samples = (details) => (details?.samples ?? []).slice().reverse(); // oldest first
  const lengthSeries = LENGTHS.map((s) => samples(o.queue_totals?.[`${s.key}_details`]));
  if (lengthSeries[0].length > 1) {
    history.lengths = lengthSeries[0].map((p, i) => ({
      t: p.timestamp,
      values: Object.fromEntries(LENGTHS.map((s, j) => [s.key, lengthSeries[j][i]?.sample])),
    }));
  }
  const rateSeries = RATES.map((s) => samples(o.message_stats?.[`${s.key}_details`]));
  const longest = rateSeries.reduce((a, b) => (b.length > a.length ? b : a), []);
  if (longest.length > 1) {
    history.rates = longest.slice(1).map((p, i) => {
      const values = {};
      RATES.forEach((s, j) => {
        const [before, after] = [rateSeries[j][i], rateSeries[j][i + 1]];
        if (before && after && after.timestamp > before.timestamp) {
          values[s.key] = Math.max(0, ((after.sample - before.sample) * 1000) / (after.timestamp - before.timestamp));
        }
      });
      return { t: p.timestamp, values };
    });
  }
}

export function overviewPage(view, ctx) {
  const totals = h("div");
  const lengths = new Chart("Queued messages", LENGTHS, { span: SPAN });
  const rates = new Chart("Message rates", RATES, { span: SPAN, unit: "/s" });
  const listeners = h("div", { class: "table-wrap" });
  let first = history.rates.length === 0 && history.lengths.length === 0;

  const refresh = async () => {
    const query = first ? `?lengths_age=${SPAN}&lengths_incr=5&msg_rates_age=${SPAN}&msg_rates_incr=5` : "";
    const o = await get(`overview${query}`);
    if (first) seed(o);
    first = false;
    ctx.overview = o;
    const now = Date.now();
    const q = o.queue_totals ?? {};
    const m = o.message_stats ?? {};
    keep(history.lengths, { t: now, values: Object.fromEntries(LENGTHS.map((s) => [s.key, q[s.key] ?? 0])) });
    keep(history.rates, {
      t: now,
      values: Object.fromEntries(RATES.map((s) => [s.key, m[`${s.key}_details`]?.rate ?? 0])),
    });
    const t = o.object_totals ?? {};
    totals.replaceChildren(
      stats("Totals", [
        ["Connections", num(t.connections)],
        ["Channels", num(t.channels)],
        ["Exchanges", num(t.exchanges)],
        ["Queues", num(t.queues)],
        ["Consumers", num(t.consumers)],
        ["Messages ready", num(q.messages_ready)],
        ["Messages unacked", num(q.messages_unacknowledged)],
        ["Messages total", num(q.messages)],
      ]),
    );
    lengths.draw(history.lengths);
    rates.draw(history.rates);
    listeners.replaceChildren(
      table(
        "Listeners",
        ["Protocol", "Bound to", "Port"],
        (o.listeners ?? []).map((l) => [l.protocol, l.ip_address, String(l.port)]),
        "None reported.",
      ),
    );
  };

  fill(
    view,
    h("h1", {}, "Overview"),
    totals,
    h("div", { class: "charts" }, lengths.el, rates.el),
    listeners,
  );
  return { refresh };
}
