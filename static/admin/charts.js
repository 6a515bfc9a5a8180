// The dashboard's charts: hand-drawn SVG of a queue's throughput and processing times.
//
// Same rule as app.js: job data reaches the page as text only, never as markup.

import { $, svg } from './dom.js';
import { formatMs } from './format.js';
import { api, queuePath, view } from './api.js';

// ---- Charts (hand-drawn SVG) ---------------------------------------------------------------

export async function loadMetrics(reset = false) {
  const queue = view.queue;
  if (!queue) return;
  if (reset) {
    $('throughput-chart').replaceChildren();
    $('latency-chart').replaceChildren();
  }
  try {
    const data = await api('GET', `${queuePath(queue)}/metrics`);
    if (queue !== view.queue) return;
    view.metricsLoadedAt = Date.now();
    view.lastMetrics = data;
    drawCharts(data);
  } catch (_) {
    // The next refresh tries again; a chart is not worth a toast.
  }
}

export function drawCharts(data) {
  drawThroughput(data.perMinute);
  drawLatency(data.windows);
  drawLatencyTrend(data.perMinute);
}

export function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  // Maxima that divide into four round grid steps.
  for (const step of [1, 2, 4, 8, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

export function chartFrame(width, height, pad, max, format) {
  const frame = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const plotHeight = height - pad.top - pad.bottom;
  for (let line = 0; line <= 4; line += 1) {
    const y = pad.top + plotHeight - (plotHeight * line) / 4;
    frame.append(svg('line', { class: 'grid', x1: pad.left, x2: width - pad.right, y1: y, y2: y }));
    frame.append(svg('text', { class: 'axis-label', x: pad.left - 6, y: y + 3, 'text-anchor': 'end' }, format((max * line) / 4)));
  }
  return frame;
}

// Draw at the container's own width, so text is not scaled.
export function chartWidth(id, fallback) {
  const width = $(id).clientWidth;
  return width > 100 ? Math.round(width) : fallback;
}

export function drawThroughput(perMinute) {
  const width = chartWidth('throughput-chart', 640);
  const height = 170;
  const pad = { top: 10, right: 8, bottom: 20, left: 38 };
  const totals = perMinute.map((minute) => minute.completed + minute.failed);
  const max = niceMax(Math.max(0, ...totals));
  const format = (value) => (value >= 1000 ? `${(value / 1000).toFixed(1)}k` : String(Math.round(value * 10) / 10));
  const frame = chartFrame(width, height, pad, max, format);
  frame.setAttribute('aria-label', 'Completed and failed jobs per minute, last hour');
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const slot = plotWidth / Math.max(1, perMinute.length);
  const barWidth = Math.max(1, slot * 0.72);
  perMinute.forEach((minute, index) => {
    const x = pad.left + index * slot + (slot - barWidth) / 2;
    const completedHeight = (minute.completed / max) * plotHeight;
    const failedHeight = (minute.failed / max) * plotHeight;
    const baseline = pad.top + plotHeight;
    const label = `${new Date(minute.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}: ${minute.completed} completed, ${minute.failed} failed`;
    const group = svg('g', null, svg('title', null, label));
    if (minute.completed > 0) group.append(svg('rect', { class: 'bar-ok', x, y: baseline - completedHeight, width: barWidth, height: completedHeight, rx: 1 }));
    if (minute.failed > 0) group.append(svg('rect', { class: 'bar-bad', x, y: baseline - completedHeight - failedHeight, width: barWidth, height: failedHeight, rx: 1 }));
    // An invisible full-height target so the tooltip works on empty minutes too.
    group.append(svg('rect', { x: pad.left + index * slot, y: pad.top, width: slot, height: plotHeight, fill: 'transparent' }));
    frame.append(group);
  });
  const count = perMinute.length;
  for (const minutesAgo of [60, 45, 30, 15, 0]) {
    if (minutesAgo >= count && minutesAgo !== 0) continue;
    const index = count - 1 - minutesAgo;
    const x = pad.left + (index + 0.5) * slot;
    frame.append(svg('text', { class: 'axis-label', x, y: height - 5, 'text-anchor': minutesAgo === 0 ? 'end' : 'middle' }, minutesAgo === 0 ? 'now' : `-${minutesAgo}m`));
  }
  if (totals.every((total) => total === 0)) {
    frame.append(svg('text', { class: 'empty-label', x: pad.left + plotWidth / 2, y: pad.top + plotHeight / 2, 'text-anchor': 'middle' }, 'No jobs finished in the last hour'));
  }
  $('throughput-chart').replaceChildren(frame);
}

export function drawLatency(windows) {
  const width = chartWidth('latency-chart', 420);
  const height = 170;
  const pad = { top: 16, right: 8, bottom: 20, left: 48 };
  const max = niceMax(Math.max(0, ...windows.map((window) => window.processingTimeMs.p99)));
  const frame = chartFrame(width, height, pad, max, (value) => formatMs(value).replace(' ', ''));
  frame.setAttribute('aria-label', 'Processing time percentiles over the last 5, 15 and 60 minutes');
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const groupWidth = plotWidth / windows.length;
  const barWidth = Math.min(34, (groupWidth * 0.8) / 3);
  windows.forEach((window, index) => {
    const left = pad.left + index * groupWidth + (groupWidth - barWidth * 3) / 2;
    ['p50', 'p95', 'p99'].forEach((key, bar) => {
      const value = window.processingTimeMs[key];
      const barHeight = (value / max) * plotHeight;
      const x = left + bar * barWidth;
      const y = pad.top + plotHeight - barHeight;
      frame.append(svg('rect', { class: `bar-${key}`, x: x + 1, y, width: barWidth - 2, height: barHeight, rx: 2 },
        svg('title', null, `${key} over ${window.minutes} min: ${formatMs(value)} (${window.jobs} attempts)`)));
      if (value > 0 && barWidth >= 30) frame.append(svg('text', { class: 'value-label', x: x + barWidth / 2, y: y - 3, 'text-anchor': 'middle' }, formatMs(value).replace(' ', '')));
    });
    const label = window.minutes === 60 ? 'last hour' : `last ${window.minutes} min`;
    frame.append(svg('text', { class: 'axis-label', x: pad.left + (index + 0.5) * groupWidth, y: height - 5, 'text-anchor': 'middle' }, label));
  });
  if (windows.every((window) => window.jobs === 0)) {
    frame.append(svg('text', { class: 'empty-label', x: pad.left + plotWidth / 2, y: pad.top + plotHeight / 2, 'text-anchor': 'middle' }, 'No jobs processed yet'));
  }
  $('latency-chart').replaceChildren(frame);
}

// p50/p95/p99 of each minute as lines; a minute in which nothing finished breaks the lines
// (a lone minute between gaps shows as a dot).
export function drawLatencyTrend(perMinute) {
  const width = chartWidth('latency-trend-chart', 900);
  const height = 170;
  const pad = { top: 10, right: 8, bottom: 20, left: 48 };
  const timed = perMinute.filter((minute) => minute.processingTimeMs);
  const max = niceMax(Math.max(0, ...timed.map((minute) => minute.processingTimeMs.p99)));
  const frame = chartFrame(width, height, pad, max, (value) => formatMs(value).replace(' ', ''));
  frame.setAttribute('aria-label', 'Processing time percentiles per minute, last hour');
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const slot = plotWidth / Math.max(1, perMinute.length);
  const x = (index) => pad.left + (index + 0.5) * slot;
  const y = (value) => pad.top + plotHeight - (value / max) * plotHeight;
  for (const key of ['p50', 'p95', 'p99']) {
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        frame.append(svg('circle', { class: `dot-${key}`, cx: run[0][0], cy: run[0][1], r: 2 }));
      } else if (run.length > 1) {
        frame.append(svg('polyline', { class: `line-${key}`, points: run.map((point) => point.join(',')).join(' ') }));
      }
      run = [];
    };
    perMinute.forEach((minute, index) => {
      if (minute.processingTimeMs) run.push([x(index).toFixed(1), y(minute.processingTimeMs[key]).toFixed(1)]);
      else flush();
    });
    flush();
  }
  // A hover target per minute, with that minute's figures.
  perMinute.forEach((minute, index) => {
    const time = new Date(minute.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const times = minute.processingTimeMs;
    const label = times
      ? `${time}: p50 ${formatMs(times.p50)}, p95 ${formatMs(times.p95)}, p99 ${formatMs(times.p99)}`
      : `${time}: nothing finished`;
    frame.append(svg('rect', { x: pad.left + index * slot, y: pad.top, width: slot, height: plotHeight, fill: 'transparent' }, svg('title', null, label)));
  });
  const count = perMinute.length;
  for (const minutesAgo of [60, 45, 30, 15, 0]) {
    if (minutesAgo >= count && minutesAgo !== 0) continue;
    frame.append(svg('text', { class: 'axis-label', x: x(count - 1 - minutesAgo), y: height - 5, 'text-anchor': minutesAgo === 0 ? 'end' : 'middle' }, minutesAgo === 0 ? 'now' : `-${minutesAgo}m`));
  }
  if (timed.length === 0) {
    frame.append(svg('text', { class: 'empty-label', x: pad.left + plotWidth / 2, y: pad.top + plotHeight / 2, 'text-anchor': 'middle' }, 'No jobs finished in the last hour'));
  }
  $('latency-trend-chart').replaceChildren(frame);
}
