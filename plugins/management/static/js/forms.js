// Pieces shared by the section pages: forms that call the API, JSON fields, publish and get.

import { del, path, post } from "./api.js";
import { field, h, input, select, stats, uid, values } from "./dom.js";

/** A <form> with a heading; onsubmit(values, button) runs through ctx.act. */
export function form(title, controls, submitLabel, onsubmit) {
  const headingId = uid("h");
  const button = h("button", { type: "submit" }, submitLabel);
  const el = h(
    "form",
    { class: "panel", "aria-labelledby": headingId },
    h("h3", { id: headingId }, title),
    controls,
    h("div", { class: "actions" }, button),
  );
  el.addEventListener("submit", (event) => {
    event.preventDefault();
    onsubmit(values(el), button, el);
  });
  return el;
}

/** The vhost <select> of a declare form: the filtered vhost first, else "/". */
export function vhostField(ctx) {
  const chosen = ctx.vhost || (ctx.vhosts.includes("/") ? "/" : ctx.vhosts[0]);
  return field("Virtual host", select("vhost", ctx.vhosts, chosen));
}

export const textarea = (name, attrs = {}) => h("textarea", { name, rows: 3, ...attrs });

/** Parse an optional JSON object typed by the user; a clear error names the field. */
export function jsonObject(text, label) {
  if (!text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${label} is not valid JSON: ${error.message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${label} must be a JSON object, such as {"x-max-length": 10}`);
  }
  return value;
}

/** A confirm() before a destructive action; true to go on. */
export const confirmed = (question) => window.confirm(question);

/**
 * The "Delete exchange" / "Delete queue" button of an object's page (`kind` "exchange" or
 * "queue"): asks first, DELETEs `apiPath`, then goes back to the list with a notice.
 */
export function deleteButton(ctx, kind, name, apiPath) {
  const title = kind[0].toUpperCase() + kind.slice(1);
  return h(
    "button",
    {
      type: "button",
      class: "danger",
      onclick: (event) =>
        confirmed(`Delete ${kind} '${name}'?`) &&
        ctx.act(event.currentTarget, "", async () => {
          await del(apiPath);
          ctx.go(`#/${kind}s`, `${title} '${name}' deleted.`);
        }),
    },
    `Delete ${kind}`,
  );
}

/**
 * "Publish message" form: to exchange `exchange` (or to a queue through the default exchange
 * when `queue` is given, as RabbitMQ's queue page does).
 */
export function publishForm(ctx, vhost, { exchange = "", queue } = {}) {
  const controls = [
    queue === undefined ? field("Routing key", input("routing_key")) : null,
    field(
      "Delivery mode",
      select("delivery_mode", [
        ["1", "1 - Non-persistent"],
        ["2", "2 - Persistent"],
      ]),
    ),
    field("Headers (JSON)", textarea("headers", { rows: 2, placeholder: '{"key": "value"}' })),
    field("Properties (JSON)", textarea("properties", { rows: 2, placeholder: '{"content_type": "text/plain"}' })),
    field("Payload", textarea("payload", { rows: 4 })),
  ];
  return form("Publish message", controls, "Publish message", (v, button, el) =>
    ctx.act(
      button,
      (answer) =>
        answer?.routed === false
          ? "Message published, but not routed to any queue."
          : "Message published.",
      async () => {
        const properties = {
          delivery_mode: Number(v.delivery_mode),
          ...jsonObject(v.properties, "Properties"),
        };
        const headers = jsonObject(v.headers, "Headers");
        if (Object.keys(headers).length) properties.headers = headers;
        const answer = await post(path("exchanges", vhost, exchange || "amq.default") + "/publish", {
          properties,
          routing_key: queue ?? v.routing_key,
          payload: v.payload,
          payload_encoding: "string",
        });
        el.elements.payload.value = "";
        return answer;
      },
    ),
  );
}

/** "Get messages" form and the list of messages it got. */
export function getForm(ctx, vhost, queue) {
  const results = h("div", { class: "messages", "aria-live": "polite" });
  const controls = [
    field(
      "Ack mode",
      select("ackmode", [
        ["ack_requeue_true", "Nack message requeue true"],
        ["ack_requeue_false", "Automatic ack"],
        ["reject_requeue_true", "Reject requeue true"],
        ["reject_requeue_false", "Reject requeue false"],
      ]),
    ),
    field(
      "Encoding",
      select("encoding", [
        ["auto", "Auto string / base64"],
        ["base64", "base64"],
      ]),
    ),
    field("Messages", input("count", { type: "number", min: 1, value: 1 })),
  ];
  const el = form("Get messages", controls, "Get message(s)", (v, button) =>
    ctx.act(
      button,
      (got) => (got.length ? `Got ${got.length} message(s).` : "Queue is empty."),
      async () => {
        const got = await post(path("queues", vhost, queue) + "/get", {
          count: Number(v.count) || 1,
          ackmode: v.ackmode,
          encoding: v.encoding,
          truncate: 50000,
        });
        results.replaceChildren(...got.map((m, i) => message(m, i + 1)));
        if (!got.length) results.replaceChildren(h("p", {}, "Queue is empty."));
        return got;
      },
    ),
  );
  el.append(results);
  return el;
}

function message(m, index) {
  const id = uid("m");
  return h(
    "section",
    { class: "message", "aria-labelledby": id },
    h("h4", { id }, `Message ${index}`),
    stats(`Message ${index}`, [
      ["Exchange", m.exchange === "" ? "(AMQP default)" : m.exchange],
      ["Routing key", m.routing_key],
      ["Redelivered", m.redelivered ? "yes" : "no"],
      ["Remaining in queue", String(m.message_count)],
      ["Properties", h("code", {}, JSON.stringify(m.properties ?? {}))],
      ["Payload size", `${m.payload_bytes} bytes, encoding: ${m.payload_encoding}`],
      ["Payload", h("pre", {}, m.payload)],
    ]),
  );
}

