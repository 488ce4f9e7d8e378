// Small DOM helpers. Every name from the broker goes in as text (textContent), never as HTML.

/** h("a", {href: "#"}, "text", child) builds an element; attributes starting "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Append children to el, skipping null, undefined and false (optional parts of a page). */
export function fill(el, ...children) {
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

let ids = 0;
/** A fresh element id, for label/for and aria-labelledby. */
export const uid = (prefix = "f") => `${prefix}-${++ids}`;

/** A labelled form field: returns [label, control] wrapped in a div.field. */
export function field(label, control, hint) {
  control.id ||= uid();
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint && h("small", {}, hint));
}

export const input = (name, attrs = {}) => h("input", { name, ...attrs });
export function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map((o) => {
      const [v, text] = Array.isArray(o) ? o : [o, o];
      return h("option", { value: v, selected: v === value }, text);
    }),
  );
}
export const checkbox = (name, label, checked = false) => {
  const box = h("input", { type: "checkbox", name, id: uid(), checked });
  return h("div", { class: "field check" }, box, h("label", { for: box.id }, label));
};

/** Numbers and rates as the RabbitMQ UI shows them. */
export const num = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en"));
export function rate(details) {
  const r = details?.rate;
  if (r === undefined || r === null) return "–";
  return `${r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en")}/s`;
}
export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
export const vhostLabel = (v) => (v === "/" ? "/" : v);

/**
 * A table with a caption (its accessible name) and a header row. rows: list of arrays of cells
 * (strings or nodes). Replaces `old` when given, keeping the page from jumping.
 */
export function table(caption, headers, rows, empty = "none") {
  const body = rows.length
    ? rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))
    : [h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty))];
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, body),
  );
}

/**
 * A definition list of figures; each term and value pair is a group named by its term, so
 * "the value of Ready" is the definition inside the group named "Ready".
 */
export function stats(label, pairs) {
  const dl = h("dl", { class: "stats", "aria-label": label });
  for (const [term, value] of pairs) {
    const id = uid("t");
    dl.append(h("div", { role: "group", "aria-labelledby": id }, h("dt", { id }, term), h("dd", {}, value)));
  }
  return dl;
}

/** Form values: checkboxes as booleans, the rest as trimmed-free strings. */
export function values(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    out[el.name] = el.type === "checkbox" ? el.checked : el.value;
  }
  return out;
}

/** fn, called at most once per `ms` of quiet (a filter typed into calls the API once). */
export function debounce(fn, ms = 250) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
