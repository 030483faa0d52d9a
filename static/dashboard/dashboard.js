// The dashboard: figures and charts from /analytics/aggregations, the table from
// /analytics/messages, new messages from the live feed at /ws/messages/. Filters live in the
// page's URL, so a view can be shared; a click on a chart element or a row drills down.
// Recorded text is only ever set with textContent (it is whatever a client sent).
"use strict";

(function () {
  const { PALETTE, page, timeRange, getJson, setStatus, themeCharts, cell } = monitor;
  const { seconds, money, count } = monitor.format;
  const INTERVAL_SECONDS = { "1m": 60, "5m": 300, "1h": 3600, "1d": 86400, "1w": 604800 };
  const TOP_MODELS = 6;
  const PAGE = 25;
  const OTHER = "#7f8c8d";  // the colour of "other models"

  const content = document.body.dataset.content === "1";
  const charts = {};
  window.dashboardCharts = charts;  // read by the browser tests and handy in a console

  // --- the filters ---------------------------------------------------------------------------

  function apiQuery(extra) {
    const query = monitor.apiQuery();
    for (const [name, value] of Object.entries(extra || {})) query.set(name, value);
    return query;
  }

  function interval() {
    const { start, end } = timeRange();
    const from = start ? Date.parse(start) : NaN;
    const to = end ? Date.parse(end) : Date.now();
    const span = (to - from) / 1000;
    if (!isFinite(span)) return "1d";
    if (span <= 2 * 3600) return "1m";
    if (span <= 12 * 3600) return "5m";
    if (span <= 8 * 86400) return "1h";
    if (span <= 365 * 86400) return "1d";
    return "1w";
  }

  /** Navigate to the same dashboard with these parameters changed (null removes one). */
  function drill(changes, anchor) {
    const next = new URLSearchParams(location.search);
    for (const [name, value] of Object.entries(changes)) {
      if (value === null || value === undefined || value === "") next.delete(name);
      else next.set(name, value);
    }
    location.assign(`${location.pathname}?${next}${anchor || "#messages"}`);
  }

  monitor.wireFilters();

  // --- formatting ----------------------------------------------------------------------------

  const when = (iso) => new Date(iso).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });

  // --- charts --------------------------------------------------------------------------------

  function draw(name, config, onPick) {
    const canvas = document.getElementById(`chart-${name}`);
    if (charts[name]) charts[name].destroy();
    config.options = Object.assign({ responsive: true, animation: false }, config.options || {});
    if (onPick) {
      config.options.onClick = (event, elements) => {
        if (elements.length) onPick(elements[0].index, elements[0].datasetIndex);
      };
      config.options.onHover = (event, elements) => {
        event.native.target.style.cursor = elements.length ? "pointer" : "default";
      };
    }
    charts[name] = new Chart(canvas, config);
    return charts[name];
  }

  function describe(name, text) {
    document.getElementById(`chart-${name}`).setAttribute("aria-label", text);
  }

  function timeLabel(iso, step) {
    const date = new Date(iso);
    if (step >= 86400) return date.toLocaleDateString();
    if (step < 3600) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  async function drawTimeChart(overall, step, stepName) {
    const times = overall.messages_by_time.map((point) => point.time);
    const models = page.get("model") ? [page.get("model")]
      : overall.by_model.slice(0, TOP_MODELS).map((row) => row.model);
    const series = await Promise.all(models.map((model) => (page.get("model") ? overall
      : getJson(`/analytics/aggregations?${apiQuery({ interval: stepName, model, top_users: 1 })}`))));
    const datasets = models.map((model, index) => {
      const byTime = new Map(series[index].messages_by_time.map((point) => [point.time, point.messages]));
      return { label: model || "(none)", data: times.map((time) => byTime.get(time) || 0),
        backgroundColor: PALETTE[index % PALETTE.length] };
    });
    const shown = datasets.reduce((sum, set) => sum + set.data.reduce((a, b) => a + b, 0), 0);
    if (shown < overall.total_messages && !page.get("model")) {
      const rest = overall.messages_by_time.map((point, i) =>
        point.messages - datasets.reduce((sum, set) => sum + set.data[i], 0));
      datasets.push({ label: "other models", data: rest, backgroundColor: OTHER });
    }
    draw("time", {
      type: "bar",
      data: { labels: times.map((time) => timeLabel(time, step)), datasets },
      options: { scales: {
        x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "messages" } },
      } },
    }, (index, datasetIndex) => {
      const start = new Date(times[index]);
      const end = new Date(start.getTime() + step * 1000 - 1);
      const model = models[datasetIndex];
      drill({ range: "custom", start_time: start.toISOString(), end_time: end.toISOString(),
        ...(model !== undefined ? { model } : {}) });
    });
    describe("time", `Messages over time by model: ${count(overall.total_messages)} messages in ${times.length} intervals, ${models.length} models.`);
  }

  function drawPercentiles(data) {
    const names = ["p50", "p95", "p99"];
    const latency = names.map((name) => data.latency_percentiles[name]);
    const ttft = names.map((name) => data.ttft_percentiles[name]);
    draw("percentiles", {
      type: "bar",
      data: { labels: names, datasets: [
        { label: "latency", data: latency, backgroundColor: PALETTE[0] },
        { label: "time to first token", data: ttft, backgroundColor: PALETTE[2] },
      ] },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "seconds" } } } },
    }, (index, datasetIndex) => {
      const value = (datasetIndex === 0 ? latency : ttft)[index];
      if (datasetIndex === 0 && value !== null) drill({ min_latency: value.toFixed(3) });
    });
    describe("percentiles", `Latency p50 ${seconds(latency[0])}, p95 ${seconds(latency[1])}, p99 ${seconds(latency[2])}; time to first token p50 ${seconds(ttft[0])}, p95 ${seconds(ttft[1])}.`);
  }

  function drawBars(name, rows, label, value, pick, unit) {
    draw(name, {
      type: "bar",
      data: { labels: rows.map(label), datasets: [{ label: unit, data: rows.map(value), backgroundColor: PALETTE.slice(0, rows.length) }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
    }, (index) => pick(rows[index]));
    describe(name, `${unit}: ` + rows.map((row) => `${label(row)} ${value(row) === null ? "none" : value(row).toFixed ? +value(row).toFixed(1) : value(row)}`).join(", "));
  }

  function drawCategories(rows) {
    draw("category", {
      type: "doughnut",
      data: { labels: rows.map((row) => row.category || "(none)"), datasets: [{ data: rows.map((row) => row.messages), backgroundColor: PALETTE }] },
      options: { plugins: { legend: { position: "right" } } },
    }, (index) => drill({ category: rows[index].category || null }));
    describe("category", "Messages by category: " + rows.map((row) => `${row.category || "(none)"} ${row.messages}`).join(", "));
  }

  async function loadFigures() {
    const stepName = interval();
    let data;
    try {
      data = await getJson(`/analytics/aggregations?${apiQuery({ interval: stepName, top_users: 10 })}`);
    } catch (error) {
      setStatus(`Could not load the figures (${error.message}).`);
      return;
    }
    const errors = (data.by_status.find((row) => row.status === "error") || { messages: 0 }).messages;
    document.getElementById("total-messages").textContent = count(data.total_messages);
    document.getElementById("total-users").textContent = count(data.unique_users);
    document.getElementById("total-tokens").textContent = `${count(data.total_input_tokens)} / ${count(data.total_output_tokens)}`;
    document.getElementById("total-cost").textContent = money(data.total_cost);
    document.getElementById("total-errors").textContent = data.total_messages
      ? `${(100 * errors / data.total_messages).toFixed(1)}%` : "—";
    document.getElementById("total-latency").textContent =
      `${seconds(data.latency_percentiles.p50)} / ${seconds(data.latency_percentiles.p95)}`;
    themeCharts();
    drawPercentiles(data);
    drawBars("rate", data.tokens_per_second_by_model.filter((row) => row.tokens_per_second !== null),
      (row) => row.model || "(none)", (row) => row.tokens_per_second, (row) => drill({ model: row.model }), "tokens per second");
    drawCategories(data.by_category);
    drawBars("users", data.top_users, (row) => row.user || "(anonymous)", (row) => row.messages,
      (row) => drill({ user: row.user }), "messages");
    await drawTimeChart(data, INTERVAL_SECONDS[stepName], stepName);
    setStatus(data.source === "messages" ? "Figures computed from the matching messages." : "");
    document.body.dataset.figures = "loaded";
  }

  // --- the table -----------------------------------------------------------------------------

  const cursors = [null];  // the cursor of each page seen, for "Newer"
  let position = 0;

  function excerpt(text) {
    if (!content) return "hidden";
    if (text === null || text === undefined) return "";
    const flat = text.replace(/\s+/g, " ").trim();
    return flat.length > 80 ? `${flat.slice(0, 80)}…` : flat;
  }

  function messageRow(message) {
    const row = document.createElement("tr");
    row.className = `status-${message.status}`;
    row.dataset.id = message.id;
    const link = document.createElement("a");
    link.href = `/dashboard/messages/${encodeURIComponent(message.id)}/`;
    link.textContent = when(message.timestamp);
    cell(row, "").appendChild(link);
    cell(row, message.model);
    cell(row, message.user);
    cell(row, message.status, "status");
    cell(row, `${count(message.input_tokens)} → ${count(message.output_tokens)}`, "number");
    cell(row, seconds(message.latency), "number");
    cell(row, seconds(message.ttft), "number");
    cell(row, money(message.cost), "number");
    cell(row, message.category);
    cell(row, excerpt(message.prompt), content ? "prompt" : "prompt masked");
    row.addEventListener("click", (event) => {
      if (event.target.tagName !== "A") location.assign(link.href);
    });
    return row;
  }

  async function loadPage() {
    const query = apiQuery({ limit: PAGE });
    if (cursors[position]) query.set("cursor", cursors[position]);
    let data;
    try {
      data = await getJson(`/analytics/messages?${query}`);
    } catch (error) {
      setStatus(`Could not load the messages (${error.message}).`);
      return;
    }
    const body = document.getElementById("message-rows");
    body.replaceChildren(...data.messages.map(messageRow));
    if (!data.messages.length) {
      const row = document.createElement("tr");
      cell(row, "No messages match.").colSpan = 10;
      body.appendChild(row);
    }
    cursors[position + 1] = data.next_cursor;
    document.getElementById("older").disabled = !data.next_cursor;
    document.getElementById("newer").disabled = position === 0;
    document.body.dataset.table = "loaded";
  }

  document.getElementById("older").addEventListener("click", () => { position += 1; loadPage(); });
  document.getElementById("newer").addEventListener("click", () => { position = Math.max(0, position - 1); loadPage(); });

  // --- the live feed -------------------------------------------------------------------------

  const LIVE_ROWS = 50;
  let retry = 1000;

  function liveItem(message) {
    const item = document.createElement("li");
    item.className = `status-${message.status}`;
    const link = document.createElement("a");
    link.href = `/dashboard/messages/${encodeURIComponent(message.id)}/`;
    link.textContent = `${new Date(message.timestamp).toLocaleTimeString()} ${message.model || "?"}`;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ` ${message.user || "—"} · ${message.status} · ${seconds(message.latency)}`;
    const text = document.createElement("div");
    text.className = content ? "prompt" : "prompt masked";
    text.textContent = excerpt(message.prompt);
    item.append(link, meta, text);
    return item;
  }

  function connect() {
    const state = document.getElementById("live-state");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/messages/`);
    socket.addEventListener("open", () => { state.textContent = "connected"; state.dataset.state = "open"; retry = 1000; });
    socket.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.type !== "message") return;
      const feed = document.getElementById("live-feed");
      feed.prepend(liveItem(data.message));
      while (feed.children.length > LIVE_ROWS) feed.lastElementChild.remove();
    });
    socket.addEventListener("close", () => {
      state.textContent = "disconnected, retrying…";
      state.dataset.state = "closed";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  loadPage();
  loadFigures();
  connect();
})();
