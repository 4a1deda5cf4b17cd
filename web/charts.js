// Small SVG charts for the dashboard: stacked bars per day, drawn with plain DOM calls (no library).
// Every chart has a text alternative: an aria-label that sums it up and a data table beside it.

const SVG = "http://www.w3.org/2000/svg";

// Colours with at least 3:1 contrast against white (WCAG 1.4.11, graphical objects).
export const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#b91c1c", "#6d28d9", "#0f766e", "#9d174d", "#4b5563"];

function svgElement(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function htmlElement(name, text, className) {
  const element = document.createElement(name);
  if (text !== undefined) element.textContent = text;
  if (className) element.className = className;
  return element;
}

export function formatNumber(value) {
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

// A rounded maximum for the y axis: 1, 2 or 5 times a power of ten, at least `max`.
function niceMaximum(max) {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((step) => step * power).find((candidate) => candidate >= max);
}

// Draws `series` ([{name, values}], one value per date) as stacked bars into `container`.
export function stackedBars(container, { title, unit, dates, series }) {
  container.replaceChildren();
  const figure = htmlElement("figure", undefined, "chart");
  const caption = htmlElement("figcaption", title);
  const totals = dates.map((_, day) => series.reduce((sum, item) => sum + item.values[day], 0));
  const grandTotal = totals.reduce((sum, value) => sum + value, 0);
  const width = 640;
  const height = 220;
  const margin = { top: 12, right: 12, bottom: 28, left: 56 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const top = niceMaximum(Math.max(...totals, 0));
  const slot = plotWidth / Math.max(dates.length, 1);
  const barWidth = Math.max(2, slot * 0.7);

  const svg = svgElement("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${title}: ${formatNumber(grandTotal)} ${unit} from ${dates[0]} to ${dates[dates.length - 1]}`,
    class: "chart-svg",
  });
  const axis = svgElement("g", { class: "axis" });
  for (const fraction of [0, 0.5, 1]) {
    const y = margin.top + plotHeight * (1 - fraction);
    axis.append(svgElement("line", { x1: margin.left, x2: width - margin.right, y1: y, y2: y }));
    const label = svgElement("text", { x: margin.left - 6, y: y + 4, "text-anchor": "end" });
    label.textContent = formatNumber(top * fraction);
    axis.append(label);
  }
  const labelEvery = Math.ceil(dates.length / 7);
  dates.forEach((date, day) => {
    if ((dates.length - 1 - day) % labelEvery !== 0) return;
    const label = svgElement("text", {
      x: margin.left + slot * day + slot / 2,
      y: height - 8,
      "text-anchor": "middle",
    });
    label.textContent = date.slice(5);
    axis.append(label);
  });
  svg.append(axis);

  const bars = svgElement("g", { class: "bars" });
  dates.forEach((date, day) => {
    let stacked = 0;
    series.forEach((item, index) => {
      const value = item.values[day];
      if (value <= 0) return;
      const barHeight = (value / top) * plotHeight;
      const rect = svgElement("rect", {
        x: margin.left + slot * day + (slot - barWidth) / 2,
        y: margin.top + plotHeight - ((stacked + value) / top) * plotHeight,
        width: barWidth,
        height: Math.max(barHeight, 1),
        fill: PALETTE[index % PALETTE.length],
        "data-series": item.name,
        "data-date": date,
      });
      const tooltip = svgElement("title");
      tooltip.textContent = `${item.name}, ${date}: ${formatNumber(value)} ${unit}`;
      rect.append(tooltip);
      bars.append(rect);
      stacked += value;
    });
  });
  svg.append(bars);

  const legend = htmlElement("ul", undefined, "legend");
  series.forEach((item, index) => {
    const entry = htmlElement("li");
    const swatch = htmlElement("span", undefined, "swatch");
    swatch.setAttribute("aria-hidden", "true");
    swatch.style.backgroundColor = PALETTE[index % PALETTE.length];
    const total = item.values.reduce((sum, value) => sum + value, 0);
    entry.append(swatch, `${item.name}: ${formatNumber(total)} ${unit}`);
    legend.append(entry);
  });
  if (series.length === 0) legend.append(htmlElement("li", `No ${unit} in this period.`));

  figure.append(caption, svg, legend, dataTable(title, unit, dates, series));
  container.append(figure);
}

// The chart's numbers as a table, folded away, for screen readers and for copying.
function dataTable(title, unit, dates, series) {
  const details = htmlElement("details", undefined, "chart-data");
  details.append(htmlElement("summary", `${title}: the numbers`));
  const wrapper = htmlElement("div", undefined, "table-scroll");
  const table = htmlElement("table");
  const head = htmlElement("tr");
  head.append(htmlElement("th", "Day"), ...series.map((item) => htmlElement("th", item.name)));
  head.querySelectorAll("th").forEach((cell) => cell.setAttribute("scope", "col"));
  table.append(htmlElement("caption", `${title} (${unit})`), htmlElement("thead"), htmlElement("tbody"));
  table.tHead.append(head);
  dates.forEach((date, day) => {
    if (series.every((item) => item.values[day] === 0)) return;
    const row = htmlElement("tr");
    const dayCell = htmlElement("th", date);
    dayCell.setAttribute("scope", "row");
    row.append(dayCell, ...series.map((item) => htmlElement("td", formatNumber(item.values[day]))));
    table.tBodies[0].append(row);
  });
  wrapper.append(table);
  details.append(wrapper);
  return details;
}
