// Queues: the list with depths and rates, declaring one; a queue's page with its statistics,
// consumers, bindings, publish, get, purge and delete.

import { del, get, getPage, path, post, put } from "../api.js";
import { bytes, checkbox, debounce, field, fill, h, input, num, rate, select, stats, table } from "../dom.js";
import { confirmed, deleteButton, form, getForm, jsonObject, publishForm, textarea, vhostField } from "../forms.js";

const queueLink = (q) =>
  h("a", { href: `#/queues/${encodeURIComponent(q.vhost)}/${encodeURIComponent(q.name)}` }, q.name);

function features(q) {
  const out = [];
  if (q.durable) out.push("D");
  if (q.auto_delete) out.push("AD");
  if (q.exclusive) out.push("Excl");
  for (const key of Object.keys(q.arguments ?? {})) out.push(key.replace(/^x-/, ""));
  return out.join(" ");
}

export function queuesPage(view, ctx) {
  const filter = input("filter", { type: "search", placeholder: "name contains…" });
  const summary = h("p", { class: "summary", role: "status" });
  const holder = h("div", { class: "table-wrap" });
  const refresh = async () => {
    const base = ctx.vhost ? path("queues", ctx.vhost) : "queues";
    const { items, filtered, total } = await getPage(base, { filter: filter.value });
    summary.textContent =
      filtered > items.length
        ? `Showing ${items.length} of ${filtered} matching queues (${total} in all); narrow the filter to see the rest.`
        : `${filtered} queue${filtered === 1 ? "" : "s"}${filter.value ? ` matching (${total} in all)` : ""}.`;
    const stats = (q) => q.message_stats ?? {};
    holder.replaceChildren(
      table(
        "Queues",
        ["Virtual host", "Name", "Type", "Features", "State", "Ready", "Unacked", "Total", "Incoming", "Deliver / get", "Ack", "Consumers"],
        items.map((q) => [
          q.vhost,
          queueLink(q),
          q.type ?? "classic",
          features(q),
          q.state ?? "running",
          num(q.messages_ready),
          num(q.messages_unacknowledged),
          num(q.messages),
          rate(stats(q).publish_details),
          rate(stats(q).deliver_get_details),
          rate(stats(q).ack_details),
          num(q.consumers),
        ]),
        filter.value ? "No queue matches the filter." : "No queues.",
      ),
    );
  };
  filter.addEventListener("input", debounce(() => refresh().catch(ctx.fail)));

  const declare = form(
    "Add a new queue",
    [
      vhostField(ctx),
      field("Name", input("name", { required: true })),
      field("Type", select("type", [["classic", "Classic"], ["quorum", "Quorum"], ["stream", "Stream"]], "classic")),
      field("Durability", select("durability", [["durable", "Durable"], ["transient", "Transient"]], "durable")),
      checkbox("auto_delete", "Auto delete"),
      field("Arguments (JSON)", textarea("arguments", { rows: 2, placeholder: '{"x-max-length": 1000}' })),
    ],
    "Add queue",
    (v, button, el) =>
      ctx.act(button, `Queue '${v.name}' declared.`, async () => {
        const args = jsonObject(v.arguments, "Arguments");
        if (v.type !== "classic") args["x-queue-type"] = v.type;
        await put(path("queues", v.vhost, v.name), {
          durable: v.durability === "durable",
          auto_delete: v.auto_delete,
          arguments: args,
        });
        el.elements.name.value = "";
      }),
  );

  fill(
    view,
    h("h1", {}, "Queues"),
    h("div", { class: "filter" }, field("Filter queues", filter)),
    summary,
    holder,
    declare,
  );
  return { refresh };
}

export function queuePage(view, ctx, { vhost, name }) {
  const base = path("queues", vhost, name);
  const summary = h("div");
  const consumers = h("div", { class: "table-wrap" });
  const bindings = h("div", { class: "table-wrap" });

  const refresh = async () => {
    const [q, bound] = await Promise.all([get(base), get(`${base}/bindings`)]);
    const m = q.message_stats ?? {};
    summary.replaceChildren(
      stats("Queue statistics", [
        ["Virtual host", q.vhost],
        ["Type", q.type ?? "classic"],
        ["Features", features(q) || "none"],
        ["State", q.state ?? "running"],
        ["Ready", num(q.messages_ready)],
        ["Unacked", num(q.messages_unacknowledged)],
        ["Total", num(q.messages)],
        ["Consumers", num(q.consumers)],
        ["Memory", bytes(q.memory)],
        ["Incoming", rate(m.publish_details)],
        ["Deliver / get", rate(m.deliver_get_details)],
        ["Ack", rate(m.ack_details)],
      ]),
    );
    consumers.replaceChildren(
      table(
        "Consumers",
        ["Channel", "Consumer tag", "Ack required", "Exclusive", "Prefetch"],
        (q.consumer_details ?? []).map((c) => [
          c.channel_details?.name ?? "",
          c.consumer_tag,
          c.ack_required ? "yes" : "no",
          c.exclusive ? "yes" : "no",
          num(c.prefetch_count),
        ]),
        "No consumers.",
      ),
    );
    bindings.replaceChildren(
      table(
        "Bindings",
        ["From exchange", "Routing key", "Arguments", ""],
        bound.map((b) => [
          b.source === "" ? "(AMQP default)" : b.source,
          b.routing_key,
          JSON.stringify(b.arguments ?? {}),
          b.source === ""
            ? ""
            : h(
                "button",
                {
                  type: "button",
                  "aria-label": `Unbind from ${b.source} with routing key ${b.routing_key}`,
                  onclick: (event) =>
                    ctx.act(event.currentTarget, "Binding removed.", () =>
                      del(path("bindings", vhost, "e", b.source, "q", name, b.properties_key)),
                    ),
                },
                "Unbind",
              ),
        ]),
      ),
    );
  };

  const bind = form(
    "Add binding to this queue",
    [
      field("From exchange", input("source", { required: true })),
      field("Routing key", input("routing_key")),
      field("Arguments (JSON)", textarea("arguments", { rows: 2 })),
    ],
    "Bind",
    (v, button) =>
      ctx.act(button, `Bound to exchange '${v.source}'.`, () =>
        post(path("bindings", vhost, "e", v.source, "q", name), {
          routing_key: v.routing_key,
          arguments: jsonObject(v.arguments, "Arguments"),
        }),
      ),
  );

  const purge = h(
    "button",
    {
      type: "button",
      onclick: (event) =>
        confirmed(`Purge all ready messages of queue '${name}'?`) &&
        ctx.act(event.currentTarget, `Queue '${name}' purged.`, () => del(`${base}/contents`)),
    },
    "Purge messages",
  );
  const remove = deleteButton(ctx, "queue", name, base);

  fill(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/queues" }, "Queues"), " / ", vhost),
    h("h1", {}, `Queue ${name}`),
    summary,
    consumers,
    bindings,
    h("div", { class: "columns" }, publishForm(ctx, vhost, { queue: name }), getForm(ctx, vhost, name)),
    bind,
    h("section", { class: "panel", "aria-label": "Purge or delete" }, h("h3", {}, "Purge or delete"), h("div", { class: "actions" }, purge, remove)),
  );
  return { refresh };
}
