// Building the page without ever parsing HTML: every string becomes a text node or an attribute
// value (textContent / setAttribute), so a key named `<img src=x onerror=alert(1)>` stays text.

const SVG_NS = 'http://www.w3.org/2000/svg';

// Properties set as DOM properties rather than attributes (their live value matters).
const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'required', 'readOnly', 'multiple', 'indeterminate']);

function apply(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (name === 'text') {
      el.textContent = String(value);
    } else if (name === 'on') {
      for (const [type, handler] of Object.entries(value)) el.addEventListener(type, handler);
    } else if (name === 'style') {
      // CSSOM assignments are allowed by the CSP (unlike style="" attributes).
      for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (PROPS.has(name)) {
      el[name] = value;
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h('button', {class: 'btn', on: {click}}, 'Save') — an element with safe props and children. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** The same for SVG elements (charts, the architecture picture's arrows). */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** Appends children to an existing element, skipping null/false (unlike Element.append). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

let uid = 0;
/** A unique id for label/aria wiring. */
export function id(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** The admin API sends times as RFC 3339 strings or unix milliseconds/seconds; accept all. */
export function toDate(value) {
  if (value === undefined || value === null || value === '') return null;
  if (typeof value === 'number') return new Date(value > 1e11 ? value : value * 1000);
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDate(value) {
  const d = toDate(value);
  if (!d) return '—';
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function fmtDay(value) {
  const d = toDate(value);
  if (!d) return '—';
  return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric', year: d.getUTCFullYear() === new Date().getUTCFullYear() ? undefined : 'numeric', timeZone: 'UTC' });
}

export function fmtRelative(value) {
  const d = toDate(value);
  if (!d) return 'never';
  const secs = Math.round((Date.now() - d.getTime()) / 1000);
  if (secs < 0) return fmtDate(d);
  if (secs < 45) return 'just now';
  if (secs < 90 * 60) return `${Math.round(secs / 60)} min ago`;
  if (secs < 36 * 3600) return `${Math.round(secs / 3600)} h ago`;
  if (secs < 14 * 86400) return `${Math.round(secs / 86400)} days ago`;
  return fmtDate(d);
}

export function fmtNumber(n) {
  return typeof n === 'number' && Number.isFinite(n) ? n.toLocaleString() : '—';
}

/** A field wrapper: label, control, optional hint and a live error line wired by aria. */
export function field({ label, control, hint, error, className }) {
  const controlId = control.id || id('ctl');
  control.id = controlId;
  const hintEl = hint ? h('p', { class: 'hint', id: `${controlId}-hint` }, hint) : null;
  const errorEl = error || h('p', { class: 'field-error', id: `${controlId}-error`, 'aria-live': 'polite' });
  errorEl.id = `${controlId}-error`;
  const described = [hintEl && hintEl.id, errorEl.id].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  return h('div', { class: ['field', className] },
    h('label', { for: controlId }, label),
    control,
    hintEl,
    errorEl);
}

/** Shows or clears a field's error and marks the control invalid for assistive tech. */
export function setFieldError(control, message) {
  const errorEl = document.getElementById(`${control.id}-error`);
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
  if (errorEl) errorEl.textContent = message || '';
}

export function badge(text, kind) {
  return h('span', { class: ['badge', kind && `badge-${kind}`] }, text);
}
