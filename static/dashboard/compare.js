// The model comparison: a radar and a table from /analytics/compare, for the time range,
// filters and models in the page's URL (so a comparison can be shared by its address).
// Model names are only ever set with textContent (a client can send any string as one).
"use strict";

(function () {
  const { PALETTE, page, getJson, setStatus, themeCharts, cell } = monitor;
  const { none, seconds, money, count } = monitor.format;
  const AXES = { speed: "Speed", cost: "Cost", quality: "Quality", reliability: "Reliability" };

  function apiQuery() {
    const query = monitor.apiQuery();
    for (const model of page.getAll("models")) query.append("models", model);
    return query;
  }

  monitor.wireFilters();

  // --- formatting ----------------------------------------------------------------------------

  const percent = (value) => (none(value) ? "—" : `${(100 * value).toFixed(1)}%`);
  const decimal = (value, digits) => (none(value) ? "—" : value.toFixed(digits));

  // --- the radar and the table ---------------------------------------------------------------

  function drawRadar(rows) {
    themeCharts();
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
        scales: {
          r: {
            min: 0,
            max: 1,
            // The 1.00 tick would sit on the top axis's label; the table has the numbers.
            ticks: { stepSize: 0.25, callback: (value) => (value < 1 ? value.toFixed(2) : "") },
            pointLabels: { padding: 12 },
          },
        },
        plugins: { tooltip: { callbacks: {
          label: (item) => `${item.dataset.label}: ${none(item.raw) ? "no figure" : item.raw.toFixed(2)}`,
        } } },
      },
    });
    document.getElementById("chart-radar").setAttribute("aria-label", "Relative to the best model shown: " + rows.map(
      (row) => `${row.model || "(none)"}: ` + axes.map((axis) => `${AXES[axis].toLowerCase()} ${decimal(row.radar[axis], 2)}`).join(", "),
    ).join("; "));
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
      data = await getJson(`/analytics/compare?${apiQuery()}`);
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
