// What the dashboard and the model comparison share: the filters of the page's URL and their
// form, the analytics API's answers, number formats and the charts' colours. Loaded by every
// dashboard page (templates/dashboard/base.html) before the page's own script.
"use strict";

window.monitor = (function () {
  const RANGE_SECONDS = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  // The API's filters taken over from the page's URL as they are (the time range is computed).
  const PASSED_ON = [
    "search", "model", "user", "status", "category", "endpoint",
    "min_input_tokens", "max_input_tokens", "min_output_tokens", "max_output_tokens",
    "min_latency", "max_latency", "min_cost", "max_cost", "has_feedback", "min_score",
  ];
  const PALETTE = ["#2f80ed", "#27ae60", "#f39c12", "#9b59b6", "#e74c3c", "#16a085", "#7f8c8d", "#d35400"];

  const page = new URLSearchParams(location.search);

  /** The page's time range as API bounds: a relative range ends now, "all" has none. */
  function timeRange() {
    const range = page.get("range") || (page.get("start_time") || page.get("end_time") ? "custom" : "24h");
    if (range === "custom") return { start: page.get("start_time") || null, end: page.get("end_time") || null };
    if (range === "all") return { start: null, end: null };
    const seconds = RANGE_SECONDS[range] || RANGE_SECONDS["24h"];
    return { start: new Date(Date.now() - seconds * 1000).toISOString(), end: null };
  }

  /** The API query of the page's filters and time range. */
  function apiQuery() {
    const query = new URLSearchParams();
    for (const name of PASSED_ON) {
      if (page.get(name)) query.set(name, page.get(name));
    }
    const { start, end } = timeRange();
    if (start) query.set("start_time", start);
    if (end) query.set("end_time", end);
    return query;
  }

  /** The filter form (#filters): its custom times show for a custom range only, and it
   * submits to a URL without empty fields, so a view can be shared by its address. */
  function wireFilters() {
    const rangeSelect = document.getElementById("range");
    rangeSelect.addEventListener("change", () => {
      document.querySelector(".custom-range").hidden = rangeSelect.value !== "custom";
    });
    document.getElementById("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      for (const [name, value] of new FormData(event.target)) {
        if (!value) continue;
        if ((name === "start_time" || name === "end_time") && rangeSelect.value !== "custom") continue;
        query.append(name, value);
      }
      for (const name of PASSED_ON) {  // criteria given in the URL (a drill-down), not in the form
        if (!query.has(name) && page.get(name) && !event.target.elements[name]) query.set(name, page.get(name));
      }
      location.assign(`${location.pathname}?${query}`);
    });
  }

  /** An API answer's JSON; an error says its status and the API's reason. */
  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (error) { /* not JSON */ }
      if (Array.isArray(detail)) detail = detail.map((problem) => problem.msg).join("; ");
      throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    }
    return response.json();
  }

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  /** Chart.js in the page's colours (light or dark) and font. */
  function themeCharts() {
    const style = getComputedStyle(document.body);
    Chart.defaults.color = style.getPropertyValue("--muted").trim() || "#666";
    Chart.defaults.borderColor = style.getPropertyValue("--grid").trim() || "#ddd";
    Chart.defaults.font.family = style.getPropertyValue("font-family");
    Chart.defaults.maintainAspectRatio = false;
  }

  /** A table cell with this text (recorded text is only ever set as text). */
  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  const integer = new Intl.NumberFormat();
  const none = (value) => value === null || value === undefined;
  const format = {
    none,
    seconds: (value) => (none(value) ? "—" : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`),
    money: (value) => (none(value) ? "—" : `$${value.toFixed(value < 1 ? 4 : 2)}`),
    count: (value) => (none(value) ? "—" : integer.format(value)),
  };

  return { PASSED_ON, PALETTE, page, timeRange, apiQuery, wireFilters, getJson, setStatus, themeCharts, cell, format };
})();
