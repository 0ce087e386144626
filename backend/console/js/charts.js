// Small charts drawn as inline SVG from our own code (no chart library, nothing from a CDN).
// They redraw at the container's real width so labels stay readable on a phone, and each comes
// with the same numbers as a table for screen readers and for copying.

import { h, s, fmtNumber } from './dom.js';

// The y axis has ticks at quarters of this maximum, so it is four times a round, whole tick
// size (1, 2, 2.5 or 5 times a power of ten): 5 requests draw as 0-2-4-6-8, never 1.25 steps.
function niceMax(max) {
  if (max <= 4) return 4;
  for (let pow = 1; ; pow *= 10) {
    for (const step of [1, 2, 2.5, 5]) {
      const tick = step * pow;
      if (Number.isInteger(tick) && tick * 4 >= max) return tick * 4;
    }
  }
}

/**
 * A vertical bar chart. `points`: [{value, label (x tick), title (tooltip)}];
 * `tickEvery`: label every n-th bar. Returns an element that redraws on resize.
 */
export function barChart({ points, ariaLabel, tickEvery = 5, height = 190, unit = 'requests', testId }) {
  const host = h('div', { class: 'chart', 'data-testid': testId });
  const figure = h('figure', { class: 'chart-figure' }, host);

  function draw() {
    const width = Math.max(260, Math.floor(host.clientWidth || 600));
    const pad = { top: 10, right: 8, bottom: 26, left: 40 };
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const max = niceMax(Math.max(0, ...points.map((p) => p.value)));
    const step = innerW / points.length;
    const barW = Math.max(1, step * 0.72);
    const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': ariaLabel, class: 'chart-svg' });
    svg.append(s('title', {}, ariaLabel));
    // Grid lines and y ticks at quarters of a round maximum.
    for (let i = 0; i <= 4; i += 1) {
      const v = (max / 4) * i;
      const y = pad.top + innerH - (v / max) * innerH;
      svg.append(s('line', { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: i === 0 ? 'axis' : 'grid' }));
      svg.append(s('text', { x: pad.left - 6, y: y + 4, 'text-anchor': 'end', class: 'tick' }, fmtNumber(Math.round(v))));
    }
    points.forEach((p, i) => {
      const hgt = max ? (p.value / max) * innerH : 0;
      const x = pad.left + i * step + (step - barW) / 2;
      const bar = s('rect', { x, y: pad.top + innerH - hgt, width: barW, height: Math.max(hgt, p.value > 0 ? 1.5 : 0), rx: Math.min(2, barW / 3), class: ['bar', p.kind && `bar-${p.kind}`] });
      bar.append(s('title', {}, `${p.title}: ${fmtNumber(p.value)} ${unit}`));
      svg.append(bar);
      // A wide transparent target so hovering near a thin bar still shows its tooltip.
      const hit = s('rect', { x: pad.left + i * step, y: pad.top, width: step, height: innerH, class: 'hit' });
      hit.append(s('title', {}, `${p.title}: ${fmtNumber(p.value)} ${unit}`));
      svg.append(hit);
      // Labels every n-th bar plus the last one, which is anchored at the right edge so it is
      // never clipped; a regular label too close to it is dropped.
      const every = width < 480 ? tickEvery * 2 : tickEvery;
      const last = i === points.length - 1;
      const cx = pad.left + i * step + step / 2;
      const lastX = pad.left + innerW;
      if (p.label && last) {
        svg.append(s('text', { x: lastX, y: height - 8, 'text-anchor': 'end', class: 'tick' }, p.label));
      } else if (p.label && i % every === 0 && lastX - cx > 70) {
        svg.append(s('text', { x: Math.max(cx, pad.left + 16), y: height - 8, 'text-anchor': 'middle', class: 'tick' }, p.label));
      }
    });
    host.replaceChildren(svg);
  }

  const table = h('table', { class: 'table table-compact' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'When'), h('th', { scope: 'col' }, unit[0].toUpperCase() + unit.slice(1)))),
    h('tbody', {}, points.map((p) => h('tr', {}, h('td', {}, p.title), h('td', {}, fmtNumber(p.value))))));
  figure.append(h('details', { class: 'chart-table' }, h('summary', {}, 'Show the numbers'), table));

  // Redraw only when the width really changed (a redraw never changes it, so no loop).
  let drawnWidth = -1;
  const observer = new ResizeObserver(() => {
    if (host.clientWidth !== drawnWidth) {
      drawnWidth = host.clientWidth;
      draw();
    }
  });
  observer.observe(host);
  draw();
  return figure;
}

/** Horizontal bars for a few categories (refusals by reason), in plain HTML. */
export function categoryBars({ entries, empty, testId }) {
  if (!entries.length) return h('p', { class: 'muted chart-empty', 'data-testid': testId }, empty);
  const max = Math.max(...entries.map((e) => e.value), 1);
  return h('ul', { class: 'hbars', 'data-testid': testId },
    entries.map((e) => {
      const fill = h('span', { class: ['hbar-fill', e.kind && `hbar-${e.kind}`] });
      fill.style.setProperty('width', `${Math.max(2, (e.value / max) * 100)}%`);
      return h('li', { class: 'hbar' },
        h('span', { class: 'hbar-label' }, e.label, e.code ? h('code', { class: 'hbar-code' }, e.code) : null),
        h('span', { class: 'hbar-track', 'aria-hidden': 'true' }, fill),
        h('span', { class: 'hbar-value' }, fmtNumber(e.value)));
    }));
}
