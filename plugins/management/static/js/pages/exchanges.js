// Exchanges: the list, declaring one; an exchange's page with its bindings (both ways),
// binding it to a queue or an exchange, publishing to it and deleting it.

import { del, get, getPage, path, post, put } from "../api.js";
import { checkbox, debounce, field, fill, h, input, rate, select, stats, table } from "../dom.js";
import { deleteButton, form, jsonObject, publishForm, textarea, vhostField } from "../forms.js";

const STANDARD_TYPES = ["direct", "fanout", "topic", "headers"];
export const exchangeLabel = (name) => (name === "" ? "(AMQP default)" : name);
const exchangeHref = (vhost, name) =>
  `#/exchanges/${encodeURIComponent(vhost)}/${encodeURIComponent(name || "amq.default")}`;

function features(x) {
  const out = [];
  if (x.durable) out.push("D");
  if (x.auto_delete) out.push("AD");
  if (x.internal) out.push("I");
  for (const key of Object.keys(x.arguments ?? {})) out.push(key);
  return out.join(" ");
}

export function exchangesPage(view, ctx) {
  const filter = input("filter", { type: "search", placeholder: "name contains…" });
  const summary = h("p", { class: "summary", role: "status" });
  const holder = h("div", { class: "table-wrap" });
  const refresh = async () => {
    const base = ctx.vhost ? path("exchanges", ctx.vhost) : "exchanges";
    const { items, filtered, total } = await getPage(base, { filter: filter.value });
    summary.textContent =
      filtered > items.length
        ? `Showing ${items.length} of ${filtered} matching exchanges (${total} in all).`
        : `${filtered} exchange${filtered === 1 ? "" : "s"}.`;
    holder.replaceChildren(
      table(
        "Exchanges",
        ["Virtual host", "Name", "Type", "Features", "Rate in", "Rate out"],
        items.map((x) => [
          x.vhost,
          h("a", { href: exchangeHref(x.vhost, x.name) }, exchangeLabel(x.name)),
          x.type,
          features(x),
          rate(x.message_stats?.publish_in_details),
          rate(x.message_stats?.publish_out_details),
        ]),
        "No exchanges.",
      ),
    );
  };
  filter.addEventListener("input", debounce(() => refresh().catch(ctx.fail)));

  const types = (ctx.overview?.exchange_types ?? []).map((t) => t.name);
  const declare = form(
    "Add a new exchange",
    [
      vhostField(ctx),
      field("Name", input("name", { required: true })),
      field("Type", select("type", types.length ? types : STANDARD_TYPES, "direct")),
      field("Durability", select("durability", [["durable", "Durable"], ["transient", "Transient"]], "durable")),
      checkbox("auto_delete", "Auto delete"),
      checkbox("internal", "Internal"),
      field("Arguments (JSON)", textarea("arguments", { rows: 2, placeholder: '{"alternate-exchange": "ae"}' })),
    ],
    "Add exchange",
    (v, button, el) =>
      ctx.act(button, `Exchange '${v.name}' declared.`, async () => {
        await put(path("exchanges", v.vhost, v.name), {
          type: v.type,
          durable: v.durability === "durable",
          auto_delete: v.auto_delete,
          internal: v.internal,
          arguments: jsonObject(v.arguments, "Arguments"),
        });
        el.elements.name.value = "";
      }),
  );

  fill(
    view,
    h("h1", {}, "Exchanges"),
    h("div", { class: "filter" }, field("Filter exchanges", filter)),
    summary,
    holder,
    declare,
  );
  return { refresh };
}

function bindingRows(ctx, vhost, bindings, other) {
  return bindings.map((b) => [
    other(b),
    b.routing_key,
    JSON.stringify(b.arguments ?? {}),
    b.source === ""
      ? ""
      : h(
          "button",
          {
            type: "button",
            "aria-label": `Unbind ${b.source} from ${b.destination} with routing key ${b.routing_key}`,
            onclick: (event) =>
              ctx.act(event.currentTarget, "Binding removed.", () =>
                del(
                  path(
                    "bindings",
                    vhost,
                    "e",
                    b.source,
                    b.destination_type === "queue" ? "q" : "e",
                    b.destination,
                    b.properties_key,
                  ),
                ),
              ),
          },
          "Unbind",
        ),
  ]);
}

export function exchangePage(view, ctx, { vhost, name: urlName }) {
  const name = urlName === "amq.default" ? "" : urlName;
  const base = path("exchanges", vhost, urlName);
  const summary = h("div");
  const outgoing = h("div", { class: "table-wrap" });
  const incoming = h("div", { class: "table-wrap" });

  const refresh = async () => {
    const [x, from, to] = await Promise.all([
      get(base),
      get(`${base}/bindings/source`),
      get(`${base}/bindings/destination`),
    ]);
    summary.replaceChildren(
      stats("Exchange details", [
        ["Virtual host", x.vhost],
        ["Type", x.type],
        ["Features", features(x) || "none"],
        ["Rate in", rate(x.message_stats?.publish_in_details)],
        ["Rate out", rate(x.message_stats?.publish_out_details)],
      ]),
    );
    const destination = (b) =>
      b.destination_type === "queue"
        ? h("a", { href: `#/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(b.destination)}` }, `queue ${b.destination}`)
        : h("a", { href: exchangeHref(vhost, b.destination) }, `exchange ${b.destination}`);
    outgoing.replaceChildren(
      table("Bindings from this exchange", ["To", "Routing key", "Arguments", ""], bindingRows(ctx, vhost, from, destination), "No bindings."),
    );
    incoming.replaceChildren(
      table(
        "Bindings to this exchange",
        ["From", "Routing key", "Arguments", ""],
        bindingRows(ctx, vhost, to, (b) => h("a", { href: exchangeHref(vhost, b.source) }, exchangeLabel(b.source))),
        "No bindings.",
      ),
    );
  };

  const bind = form(
    "Add binding from this exchange",
    [
      field("Destination type", select("destination_type", [["q", "To queue"], ["e", "To exchange"]], "q")),
      field("Destination", input("destination", { required: true })),
      field("Routing key", input("routing_key")),
      field("Arguments (JSON)", textarea("arguments", { rows: 2 })),
    ],
    "Bind",
    (v, button) =>
      ctx.act(button, `Bound to ${v.destination_type === "q" ? "queue" : "exchange"} '${v.destination}'.`, () =>
        post(path("bindings", vhost, "e", name, v.destination_type, v.destination), {
          routing_key: v.routing_key,
          arguments: jsonObject(v.arguments, "Arguments"),
        }),
      ),
  );

  const remove = deleteButton(ctx, "exchange", name, base);

  fill(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/exchanges" }, "Exchanges"), " / ", vhost),
    h("h1", {}, `Exchange ${exchangeLabel(name)}`),
    summary,
    outgoing,
    incoming,
    h("div", { class: "columns" }, name === "" ? null : bind, publishForm(ctx, vhost, { exchange: name })),
    name === "" || name.startsWith("amq.")
      ? null
      : h("section", { class: "panel", "aria-label": "Delete" }, h("h3", {}, "Delete this exchange"), h("div", { class: "actions" }, remove)),
  );
  return { refresh };
}
