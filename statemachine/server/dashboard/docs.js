// The API reference at /docs, drawn from /openapi.json by this file alone: nothing is loaded
// from elsewhere, so it works offline and under the dashboard's Content-Security-Policy.
// Every value is inserted as text, never as HTML.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

const METHODS = ["get", "post", "put", "patch", "delete"];

function refName(ref) {
  return ref.split("/").pop();
}

// a short type for a schema: "string", "integer", "Instance", "array of HistoryEntry", ...
function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.type === "array") return "array of " + typeOf(schema.items);
  return schema.enum ? schema.enum.join(" | ") : schema.type || "any";
}

function operation(path, method, op) {
  const params = (op.parameters || []).map((p) => el("tr", {},
    el("td", { class: "id" }, p.name), el("td", {}, p.in), el("td", {}, p.required ? "yes" : ""),
    el("td", {}, typeOf(p.schema)), el("td", {}, p.description || "")));
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  const responses = Object.entries(op.responses || {}).map(([code, r]) => {
    const content = r.content && (r.content["application/json"] || r.content["text/event-stream"]);
    return el("li", {}, el("b", {}, code), " ", r.description || "",
      content && content.schema ? ` (${typeOf(content.schema)})` : "");
  });
  return el("section", { class: "panel op", id: op.operationId || `${method}-${path}` },
    el("h2", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), " ", el("code", {}, path),
      op.summary ? el("span", { class: "muted" }, " · " + op.summary) : null),
    op.description ? el("p", { class: "prose" }, op.description) : null,
    params.length ? el("table", {}, el("thead", {}, el("tr", {},
      ["parameter", "in", "required", "type", "description"].map((t) => el("th", {}, t)))),
    el("tbody", {}, params)) : null,
    body ? el("p", {}, "Body: ", el("code", {}, typeOf(body.schema)), " (application/json)") : null,
    el("ul", { class: "responses" }, responses));
}

function render(spec) {
  const main = document.getElementById("docs");
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, item[method]));
    }
  }
  const schemas = Object.entries((spec.components || {}).schemas || {}).map(([name, schema]) =>
    el("details", { id: "schema-" + name }, el("summary", {}, name),
      el("pre", {}, JSON.stringify(schema, null, 2))));
  main.replaceChildren(...[
    el("div", { class: "panel" }, el("h1", {}, `${spec.info.title} ${spec.info.version}`),
      el("p", { class: "prose" }, spec.info.description || "")),
    [...byTag].map(([tag, ops]) => [el("h2", { class: "tag" }, tag), ops]),
    el("h2", { class: "tag" }, "schemas"), el("div", { class: "panel" }, schemas),
  ].flat(Infinity));
}

window.addEventListener("DOMContentLoaded", async () => {
  try {
    const res = await fetch("openapi.json", { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json());
  } catch (err) {
    document.getElementById("docs").replaceChildren(el("p", { class: "flash" }, "Cannot load openapi.json: " + err.message));
  }
});
