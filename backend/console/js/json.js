// Pretty JSON with light syntax colouring, built from text nodes and spans (never parsed as HTML).

import { h } from './dom.js';

function walk(value, indent, out) {
  const pad = '  '.repeat(indent);
  if (value === null) {
    out.push(h('span', { class: 'j-null' }, 'null'));
  } else if (typeof value === 'boolean') {
    out.push(h('span', { class: 'j-bool' }, String(value)));
  } else if (typeof value === 'number') {
    out.push(h('span', { class: 'j-num' }, String(value)));
  } else if (typeof value === 'string') {
    out.push(h('span', { class: 'j-str' }, JSON.stringify(value)));
  } else if (Array.isArray(value)) {
    if (!value.length) {
      out.push('[]');
      return;
    }
    out.push('[\n');
    value.forEach((v, i) => {
      out.push(`${pad}  `);
      walk(v, indent + 1, out);
      out.push(i < value.length - 1 ? ',\n' : '\n');
    });
    out.push(`${pad}]`);
  } else {
    const entries = Object.entries(value);
    if (!entries.length) {
      out.push('{}');
      return;
    }
    out.push('{\n');
    entries.forEach(([k, v], i) => {
      out.push(`${pad}  `, h('span', { class: 'j-key' }, JSON.stringify(k)), ': ');
      walk(v, indent + 1, out);
      out.push(i < entries.length - 1 ? ',\n' : '\n');
    });
    out.push(`${pad}}`);
  }
}

/** A <pre> showing `value` as indented, coloured JSON. */
export function jsonView(value, props = {}) {
  const out = [];
  walk(value, 0, out);
  return h('pre', { class: 'code json', ...props }, h('code', {}, out));
}
