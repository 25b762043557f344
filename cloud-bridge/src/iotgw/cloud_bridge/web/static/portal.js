// The portal's behaviour: buy through the JSON API, follow each order's status over
// server-sent events, refresh the device list. Reads ride on the HttpOnly cookie set at sign-in;
// the purchase (a write) sends the key from this tab's sessionStorage as a Bearer header, since
// the api never lets a cookie authorise a write (see web/login.py). Text goes into the page
// with textContent only, never innerHTML.
"use strict";

const FINAL = new Set(["Ready", "Failed"]);
const KEY = "iotgw_api_key";
const DEVICE_REFRESH_MS = 5000;
const streams = new Map();

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function when(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").slice(0, 16) + " UTC";
}

function statusCell(td, order) {
  td.replaceChildren();
  const badge = document.createElement("span");
  badge.className = "status status-" + order.status.toLowerCase();
  badge.textContent = order.status;
  td.append(badge);
  if (order.reason) {
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = " " + order.reason;
    td.append(reason);
  }
}

function orderRow(order) {
  const tr = document.createElement("tr");
  tr.dataset.orderId = order.id;
  tr.dataset.status = order.status;
  const status = document.createElement("td");
  statusCell(status, order);
  tr.append(
    cell(when(order.created_at)),
    cell(order.product),
    cell(String(order.quantity), "num"),
    cell(order.environment + " · " + order.archtype),
    cell(order.hardware),
    status,
    cell(order.trace_id, "mono"),
  );
  return tr;
}

function follow(orderId) {
  if (streams.has(orderId)) return;
  const source = new EventSource("/v1/orders/" + encodeURIComponent(orderId) + "/events");
  streams.set(orderId, source);
  source.addEventListener("status", (event) => {
    const order = JSON.parse(event.data);
    const row = document.querySelector('tr[data-order-id="' + CSS.escape(order.id) + '"]');
    if (row) {
      row.dataset.status = order.status;
      statusCell(row.children[5], order);
    }
    if (FINAL.has(order.status)) {
      source.close();
      streams.delete(orderId);
      refreshDevices();
    }
  });
  // EventSource reconnects by itself after a network error; it stops only on close().
}

function showSecrets(devices) {
  const box = document.getElementById("secrets");
  const body = box.querySelector("tbody");
  body.replaceChildren();
  for (const d of devices) {
    const tr = document.createElement("tr");
    tr.append(
      cell(d.id, "mono"),
      cell(d.mqtt_username, "mono"),
      cell(d.mqtt_client_id, "mono"),
      cell(d.secret, "mono secret"),
    );
    body.append(tr);
  }
  box.hidden = devices.length === 0;
}

function errorText(body, code) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => (e.loc || []).slice(1).join(".") + ": " + e.msg).join("; ");
  }
  if (body && typeof body.detail === "string") return body.detail;
  return "request failed (" + code + ")";
}

function setupPurchase() {
  const form = document.getElementById("buy");
  const button = document.getElementById("buy-button");
  const error = document.getElementById("buy-error");
  // One key per intended purchase: a double click or a retry after a network error returns
  // the same order instead of buying twice.
  let idempotencyKey = crypto.randomUUID();
  form.addEventListener("input", () => { idempotencyKey = crypto.randomUUID(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      window.location.assign("/portal/login");
      return;
    }
    button.disabled = true;
    const data = new FormData(form);
    const payload = {
      product: data.get("product"),
      environment: data.get("environment"),
      archtype: data.get("archtype"),
      hardware: data.get("hardware"),
      quantity: Number(data.get("quantity")),
    };
    try {
      const response = await fetch("/v1/orders", {
        method: "POST",
        headers: {
          "Authorization": "Bearer " + key,
          "Content-Type": "application/json",
          "Idempotency-Key": idempotencyKey,
        },
        body: JSON.stringify(payload),
      });
      const body = await response.json().catch(() => null);
      if (response.status === 401) {
        sessionStorage.removeItem(KEY);
        window.location.assign("/portal/login");
        return;
      }
      if (!response.ok) {
        error.textContent = errorText(body, response.status);
        error.hidden = false;
        return;
      }
      const tbody = document.querySelector("#orders tbody");
      tbody.querySelector("tr.empty")?.remove();
      if (!tbody.querySelector('tr[data-order-id="' + CSS.escape(body.id) + '"]')) {
        tbody.prepend(orderRow(body));
      }
      if (body.devices.length) showSecrets(body.devices);
      idempotencyKey = crypto.randomUUID();
      follow(body.id);
      refreshDevices();
    } catch (e) {
      error.textContent = "network error, try again: " + e;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function deviceRow(d) {
  const tr = document.createElement("tr");
  tr.dataset.deviceId = d.id;
  const presence = document.createElement("td");
  const dot = document.createElement("span");
  dot.className = "dot " + (d.online ? "on" : "off");
  presence.append(dot, document.createTextNode(d.online ? "online" : "offline"));
  const config = document.createElement("td");
  const sync = document.createElement("span");
  sync.className = "sync " + (d.in_sync ? "ok" : "pending");
  sync.textContent = d.in_sync ? "in sync" : "out of sync";
  const versions = document.createElement("span");
  versions.className = "hint";
  versions.textContent = " v" + d.reported_version + " of v" + d.desired_version;
  config.append(sync, versions);
  if (d.rejected_version) {
    const refused = document.createElement("span");
    refused.className = "reason";
    refused.textContent = " v" + d.rejected_version + " refused: " + (d.rejected_reason || "");
    config.append(refused);
  }
  tr.append(cell(d.id, "mono"), cell(d.product), presence, cell(when(d.last_seen)), config);
  return tr;
}

async function refreshDevices() {
  const response = await fetch("/v1/devices?limit=500").catch(() => null);
  if (!response || !response.ok) return;
  const devices = await response.json();
  const tbody = document.querySelector("#devices tbody");
  if (devices.length === 0) return;
  tbody.replaceChildren(...devices.map(deviceRow));
}

setupPurchase();
for (const row of document.querySelectorAll("#orders tr[data-order-id]")) {
  if (!FINAL.has(row.dataset.status)) follow(row.dataset.orderId);
}
setInterval(refreshDevices, DEVICE_REFRESH_MS);
