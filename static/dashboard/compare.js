// The model comparison: a radar and a table from /analytics/compare, for the time range,
// filters and models in the page's URL (so a comparison can be shared by its address).
// Model names are only ever set with textContent (a client can send any string as one).
"use strict";

(function () {
  const RANGE_SECONDS = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  const PASSED_ON = [
    "search", "model", "user", "status", "category", "endpoint",
    "min_input_tokens", "max_input_tokens", "min_output_tokens", "max_output_tokens",
    "min_latency", "max_latency", "min_cost", "max_cost", "has_feedback", "min_score",
  ];
  const AXES = { speed: "Speed", cost: "Cost", quality: "Quality", reliability: "Reliability" };
  const PALETTE = ["#2f80ed", "#27ae60", "#f39c12", "#9b59b6", "#e74c3c", "#16a085", "#7f8c8d", "#d35400"];

  const page = new URLSearchParams(location.search);

  function timeRange() {
    const range = page.get("range") || (page.get("start_time") || page.get("end_time") ? "custom" : "24h");
    if (range === "custom") return { start: page.get("start_time") || null, end: page.get("end_time") || null };
    if (range === "all") return { start: null, end: null };
    const seconds = RANGE_SECONDS[range] || RANGE_SECONDS["24h"];
    return { start: new Date(Date.now() - seconds * 1000).toISOString(), end: null };
  }

  function apiQuery() {
    const query = new URLSearchParams();
    for (const name of PASSED_ON) {
      if (page.get(name)) query.set(name, page.get(name));
    }
    for (const model of page.getAll("models")) query.append("models", model);
    const { start, end } = timeRange();
    if (start) query.set("start_time", start);
    if (end) query.set("end_time", end);
    return query;
  }

  const rangeSelect = document.getElementById("range");
  rangeSelect.addEventListener("change", () => {
    document.querySelector(".custom-range").hidden = rangeSelect.value !== "custom";
  });
  document.getElementById("filters").addEventListener("submit", (event) => {
    // Leave empty fields (and the custom times of a relative range) out of the shared URL.
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(event.target)) {
      if (!value) continue;
      if ((name === "start_time" || name === "end_time") && rangeSelect.value !== "custom") continue;
      query.append(name, value);
    }
    for (const name of PASSED_ON) {  // criteria given in the URL, not in the form
      if (!query.has(name) && page.get(name) && !event.target.elements[name]) query.set(name, page.get(name));
    }
    location.assign(`${location.pathname}?${query}`);
  });

  // --- formatting ----------------------------------------------------------------------------

  const integer = new Intl.NumberFormat();
  const none = (value) => value === null || value === undefined;
  const seconds = (value) => (none(value) ? "—" : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`);
  const money = (value) => (none(value) ? "—" : `$${value.toFixed(value < 1 ? 4 : 2)}`);
  const count = (value) => (none(value) ? "—" : integer.format(value));
  const percent = (value) => (none(value) ? "—" : `${(100 * value).toFixed(1)}%`);
  const decimal = (value, digits) => (none(value) ? "—" : value.toFixed(digits));

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  // --- the radar and the table ---------------------------------------------------------------

  function drawRadar(rows) {
    const style = getComputedStyle(document.body);
    Chart.defaults.color = style.getPropertyValue("--muted").trim() || "#666";
    Chart.defaults.borderColor = style.getPropertyValue("--grid").trim() || "#ddd";
    Chart.defaults.font.family = style.getPropertyValue("font-family");
    const axes = Object.keys(AXES);
    const datasets = rows.map((row, index) => {
      const colour = PALETTE[index % PALETTE.length];
      return {
        label: row.model || "(none)",
        data: axes.map((axis) => row.radar[axis]),
        borderColor: colour,
        backgroundColor: `${colour}33`,
        pointBackgroundColor: colour,
      };
    });
    if (window.comparisonChart) window.comparisonChart.destroy();
    window.comparisonChart = new Chart(document.getElementById("chart-radar"), {
      type: "radar",
      data: { labels: axes.map((axis) => AXES[axis]), datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { r: { min: 0, max: 1, ticks: { stepSize: 0.25, callback: (value) => value.toFixed(2) } } },
        plugins: { tooltip: { callbacks: {
          label: (item) => `${item.dataset.label}: ${none(item.raw) ? "no figure" : item.raw.toFixed(2)}`,
        } } },
      },
    });
    document.getElementById("chart-radar").setAttribute("aria-label", "Relative to the best model shown: " + rows.map(
      (row) => `${row.model || "(none)"}: ` + axes.map((axis) => `${AXES[axis].toLowerCase()} ${decimal(row.radar[axis], 2)}`).join(", "),
    ).join("; "));
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function tableRow(data) {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    const link = document.createElement("a");
    const drill = new URLSearchParams({ model: data.model });
    for (const name of ["range", "start_time", "end_time"]) if (page.get(name)) drill.set(name, page.get(name));
    link.href = `/dashboard/?${drill}`;
    link.textContent = data.model || "(none)";
    name.appendChild(link);
    row.appendChild(name);
    cell(row, count(data.messages), "number");
    cell(row, `${count(data.input_tokens)} / ${count(data.output_tokens)}`, "number");
    cell(row, decimal(data.tokens_per_second, 1), "number");
    cell(row, `${seconds(data.avg_ttft)} / ${seconds(data.p50_ttft)}`, "number");
    cell(row, seconds(data.p50_latency), "number");
    cell(row, seconds(data.p95_latency), "number");
    cell(row, seconds(data.p99_latency), "number");
    cell(row, percent(data.success_rate), "number");
    cell(row, money(data.cost), "number");
    cell(row, none(data.cost_per_1k_output_tokens) ? "—" : `$${data.cost_per_1k_output_tokens.toFixed(4)}`, "number");
    cell(row, none(data.avg_score) ? "no ratings" : `${data.avg_score.toFixed(2)} (${count(data.ratings)})`, "number");
    return row;
  }

  async function load() {
    let data;
    try {
      const response = await fetch(`/analytics/compare?${apiQuery()}`, {
        credentials: "same-origin", headers: { Accept: "application/json" } });
      data = await response.json();
      if (!response.ok) {
        const detail = typeof data.detail === "string" ? data.detail
          : (data.detail || []).map((problem) => problem.msg).join("; ");
        throw new Error(`${response.status}: ${detail}`);
      }
    } catch (error) {
      setStatus(`Could not load the comparison (${error.message}).`);
      return;
    }
    const body = document.getElementById("compare-rows");
    body.replaceChildren(...data.models.map(tableRow));
    if (!data.models.length) {
      const row = document.createElement("tr");
      cell(row, "No messages match.").colSpan = 12;
      body.appendChild(row);
    }
    drawRadar(data.models);
    setStatus(data.source === "messages" ? "Figures computed from the matching messages." : "");
    document.body.dataset.comparison = "loaded";
  }

  load();
})();
