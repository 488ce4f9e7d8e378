// Connections (closing one) and channels. A user tagged only "management" sees its own; the
// API filters, the page says so.

import { del, get, path } from "../api.js";
import { fill, h, num, rate, table } from "../dom.js";
import { confirmed } from "../forms.js";

function since(ms) {
  if (!ms) return "–";
  const at = new Date(ms);
  const today = at.toDateString() === new Date().toDateString();
  return today ? at.toLocaleTimeString() : at.toLocaleString();
}
const client = (c) => {
  const p = c.client_properties ?? {};
  return [p.product, p.version].filter(Boolean).join(" ") || "–";
};
const scoped = (ctx, items) => (ctx.vhost ? items.filter((i) => i.vhost === ctx.vhost) : items);
const ownOnly = (ctx, what) =>
  ctx.seesAll() ? null : h("p", { class: "hint" }, `You see your own ${what} only (your tags are not administrator or monitoring).`);

export function connectionsPage(view, ctx) {
  const holder = h("div", { class: "table-wrap" });
  const refresh = async () => {
    const list = scoped(ctx, await get("connections"));
    holder.replaceChildren(
      table(
        "Connections",
        ["Name", "User", "Virtual host", "Protocol", "Client", "Channels", "State", "From client", "To client", "Connected at", ""],
        list.map((c) => [
          c.user_provided_name ? h("span", {}, c.name, h("br"), h("small", {}, c.user_provided_name)) : c.name,
          c.user,
          c.vhost,
          c.protocol,
          client(c),
          num(c.channels),
          c.state ?? "running",
          `${rate(c.recv_oct_details)}`.replace("/s", " B/s"),
          `${rate(c.send_oct_details)}`.replace("/s", " B/s"),
          since(c.connected_at),
          h(
            "button",
            {
              type: "button",
              class: "danger",
              "aria-label": `Close connection ${c.name}`,
              onclick: (event) =>
                confirmed(`Close connection ${c.name}?`) &&
                ctx.act(event.currentTarget, `Connection ${c.name} closed.`, () =>
                  del(path("connections", c.name), { "X-Reason": "Closed via management UI" }),
                ),
            },
            "Close",
          ),
        ]),
        "No connections.",
      ),
    );
  };
  fill(view, h("h1", {}, "Connections"), ownOnly(ctx, "connections"), holder);
  return { refresh };
}

export function channelsPage(view, ctx) {
  const holder = h("div", { class: "table-wrap" });
  const refresh = async () => {
    const list = scoped(ctx, await get("channels"));
    holder.replaceChildren(
      table(
        "Channels",
        ["Channel", "User", "Virtual host", "Mode", "Prefetch", "Unacked", "Consumers", "Publish", "Deliver / get", "Ack", "State"],
        list.map((c) => [
          c.user_provided_name ? h("span", {}, c.name, h("br"), h("small", {}, c.user_provided_name)) : c.name,
          c.user,
          c.vhost,
          [c.confirm ? "C" : "", c.transactional ? "T" : ""].join(" ").trim(),
          num(c.prefetch_count),
          num(c.messages_unacknowledged),
          num(c.consumer_count),
          rate(c.message_stats?.publish_details),
          rate(c.message_stats?.deliver_get_details),
          rate(c.message_stats?.ack_details),
          c.state ?? "running",
        ]),
        "No channels.",
      ),
    );
  };
  fill(view, h("h1", {}, "Channels"), ownOnly(ctx, "channels"), holder);
  return { refresh };
}
