// Renders /docs/asyncapi.json as tables: servers, channels with who sends and receives, messages.

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(...cells) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const td = document.createElement("td");
    if (value instanceof Node) td.append(value);
    else td.textContent = value;
    tr.append(td);
  }
  return tr;
}

function resolve(doc, ref) {
  return ref.replace(/^#\//, "").split("/").reduce((node, part) => node[part], doc);
}

function refName(ref) {
  return ref.split("/").pop();
}

function tags(names, className) {
  const span = document.createElement("span");
  for (const name of names) span.append(el("span", name, `tag ${className}`), " ");
  return span;
}

function typeOf(schema) {
  if (schema.$ref) return refName(schema.$ref);
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "any";
}

function constraints(schema) {
  const words = [];
  for (const [key, label] of [
    ["minLength", "min length"], ["maxLength", "max length"],
    ["minimum", "≥"], ["exclusiveMinimum", ">"], ["maximum", "≤"],
  ]) {
    if (schema[key] !== undefined) words.push(`${label} ${schema[key]}`);
  }
  if (schema.default !== undefined) words.push(`default ${JSON.stringify(schema.default)}`);
  return words.join(", ");
}

function schemaTable(name, schema) {
  const table = el("table", undefined, "table");
  table.setAttribute("aria-label", `Fields of ${name}`);
  const head = table.createTHead().insertRow();
  for (const title of ["Field", "Type", "Required", "Constraints"]) head.append(el("th", title));
  const body = table.createTBody();
  const required = new Set(schema.required || []);
  for (const [field, property] of Object.entries(schema.properties || {})) {
    body.append(row(el("code", field), typeOf(property), required.has(field) ? "yes" : "no",
      constraints(property)));
  }
  return table;
}

function render(doc) {
  $("doc-title").textContent = `${doc.info.title} ${doc.info.version} · AsyncAPI ${doc.asyncapi}`;
  $("doc-description").textContent = doc.info.description || "";
  for (const [name, server] of Object.entries(doc.servers || {})) {
    $("servers").append(row(name, server.protocol, el("code", server.host), server.description || ""));
  }
  const operations = Object.values(doc.operations || {});
  for (const [name, channel] of Object.entries(doc.channels)) {
    const using = (action) => operations
      .filter((op) => op.action === action && refName(op.channel.$ref) === name)
      .flatMap((op) => (op.tags || []).map((tag) => tag.name));
    // A fanout exchange routes by no address: the channel's name says where it is.
    const tr = row(el("code", channel.address || name), Object.keys(channel.messages).join(", "),
      tags(using("send"), "send"), tags(using("receive"), "receive"), channel.description || "");
    tr.dataset.channel = name;
    $("channels").append(tr);
  }
  for (const [name, message] of Object.entries(doc.components.messages)) {
    const card = el("section", undefined, "card");
    card.dataset.message = name;
    const schema = resolve(doc, message.payload.$ref);
    card.append(el("h2", name), el("p", message.summary || schema.description || "", "hint"));
    card.append(el("div", undefined, "scroll"));
    card.lastChild.append(schemaTable(name, schema));
    $("messages").append(card);
  }
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    if (schema.enum) {
      const card = el("section", undefined, "card");
      card.append(el("h2", name), el("p", `One of: ${schema.enum.join(", ")}`, "hint"));
      $("messages").append(card);
    }
  }
}

async function start() {
  try {
    const response = await fetch("/docs/asyncapi.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (error) {
    $("doc-error").textContent = `The AsyncAPI document could not be loaded: ${error.message}`;
    $("doc-error").hidden = false;
  }
}

start();
