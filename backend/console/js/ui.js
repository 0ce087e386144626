// Shared widgets: modal dialogs (focus-trapped, Escape closes), confirmations, toasts, copy
// buttons and the "shown only once" credentials panel.

import { h, id } from './dom.js';

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/**
 * Opens a modal <dialog>. `content` is a node (or list) and `actions` the footer buttons.
 * Returns { dialog, body, footer, close }. Escape and the × button close it unless `locked`.
 * Focus goes to the first field (or `initialFocus`) and returns to the opener on close.
 */
export function openDialog({ title, description, content, actions = [], wide = false, onClose, initialFocus, className }) {
  const opener = document.activeElement;
  const titleId = id('dlg-title');
  const body = h('div', { class: 'dialog-body' }, content);
  const footer = h('div', { class: 'dialog-actions' }, actions);
  const closeBtn = h('button', { type: 'button', class: 'icon-btn dialog-close', 'aria-label': 'Close dialog' }, '×');
  const dialog = h('dialog', { class: ['dialog', wide && 'dialog-wide', className], 'aria-labelledby': titleId },
    h('div', { class: 'dialog-head' },
      h('h2', { id: titleId }, title),
      closeBtn),
    description ? h('p', { class: 'dialog-desc' }, description) : null,
    body,
    footer);
  let closed = false;
  const state = { locked: false };
  function close(result) {
    if (closed) return;
    closed = true;
    if (dialog.open) dialog.close();
    dialog.remove();
    if (onClose) onClose(result);
    if (opener && typeof opener.focus === 'function' && document.contains(opener)) opener.focus();
  }
  closeBtn.addEventListener('click', () => close());
  // However the dialog gets closed, clean up the same way.
  dialog.addEventListener('close', () => close());
  dialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    if (!state.locked) close();
  });
  // Keep Tab inside the dialog (the native modal makes the page inert, but Tab could still
  // wander into the browser's own UI).
  dialog.addEventListener('keydown', (e) => {
    if (e.key !== 'Tab') return;
    const nodes = [...dialog.querySelectorAll(FOCUSABLE)].filter((n) => n.offsetParent !== null || n === document.activeElement);
    if (nodes.length === 0) return;
    const first = nodes[0];
    const last = nodes[nodes.length - 1];
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  const target = initialFocus || body.querySelector('input:not([type="hidden"]):not([readonly]), select, textarea') || footer.querySelector('button') || closeBtn;
  if (target) target.focus();
  return { dialog, body, footer, close, state };
}

/** A yes/no question; resolves true only when the confirm button is pressed. */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = false, extra }) {
  return new Promise((resolve) => {
    let answer = false;
    const cancel = h('button', { type: 'button', class: 'btn' }, 'Cancel');
    const ok = h('button', { type: 'button', class: ['btn', danger ? 'btn-danger' : 'btn-primary'] }, confirmLabel);
    const dlg = openDialog({
      title,
      content: [h('p', {}, message), extra || null],
      actions: [cancel, ok],
      initialFocus: cancel,
      onClose: () => resolve(answer),
    });
    cancel.addEventListener('click', () => dlg.close());
    ok.addEventListener('click', () => {
      answer = true;
      dlg.close();
    });
  });
}

export function toast(message, kind = 'info') {
  const host = document.getElementById('toasts');
  if (!host) return;
  const el = h('div', { class: ['toast', `toast-${kind}`] }, message);
  host.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

async function writeClipboard(text) {
  // The async clipboard API needs a secure context (https or localhost) and focus; fall back
  // to a selected, off-screen textarea and execCommand for plain-http origins.
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the legacy path
  }
  const area = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true', tabindex: '-1' });
  area.value = text;
  const host = document.querySelector('dialog[open]') || document.body;
  host.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/** A "Copy" button for `getText()`; says "Copied" (visibly and to screen readers) on success. */
export function copyButton(getText, { label = 'Copy', what = '' } = {}) {
  const btn = h('button', { type: 'button', class: 'btn btn-small copy-btn', 'aria-label': what ? `${label} ${what}` : label }, label);
  btn.addEventListener('click', async () => {
    const ok = await writeClipboard(getText());
    btn.textContent = ok ? 'Copied ✓' : 'Select and copy manually';
    btn.classList.toggle('copied', ok);
    if (ok) toast(what ? `${what[0].toUpperCase()}${what.slice(1)} copied to the clipboard` : 'Copied to the clipboard', 'success');
    setTimeout(() => {
      btn.textContent = label;
      btn.classList.remove('copied');
    }, 2500);
  });
  return btn;
}

/** One secret value in a read-only monospaced box with its copy button. */
export function secretRow({ label, value, testId }) {
  const inputId = id('secret');
  const input = h('input', { id: inputId, class: 'mono secret-value', type: 'text', readonly: true, value, spellcheck: 'false', autocomplete: 'off', 'data-testid': testId });
  input.addEventListener('focus', () => input.select());
  return h('div', { class: 'secret-row' },
    h('label', { for: inputId }, label),
    h('div', { class: 'secret-line' }, input, copyButton(() => value, { what: label })));
}

/** The red "only shown once" warning that goes with freshly created credentials. */
export function onceWarning(text) {
  return h('div', { class: 'callout callout-warning', role: 'alert' },
    h('strong', {}, 'Only shown once. '),
    text);
}

/** A short explanation box. */
export function callout(kind, title, ...body) {
  return h('div', { class: ['callout', `callout-${kind}`] }, title ? h('strong', {}, title, ' ') : null, body);
}

/** A spinner line while something loads. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

/** An inline error with the request id, so support can find it in the logs. */
export function errorBox(error, prefix = 'Something went wrong.') {
  const msg = error && error.message ? error.message : String(error);
  return h('div', { class: 'callout callout-error', role: 'alert' },
    h('strong', {}, prefix, ' '), msg,
    error && error.code ? h('span', { class: 'muted' }, ` (${error.code}${error.requestId ? `, request ${error.requestId}` : ''})`) : null);
}

let tabsSeq = 0;
/**
 * Code in tabs (curl / JavaScript / Python…) with a copy button: an ARIA tablist where the
 * arrow keys move between tabs. `tabs`: [{ label, text }]. Returns { el, update(tabs) }.
 */
export function codeTabs(tabs, { testId, label = 'Code samples' } = {}) {
  tabsSeq += 1;
  const base = `tabs-${tabsSeq}`;
  let current = 0;
  let texts = tabs.map((t) => t.text);
  const code = h('code', {});
  const pre = h('pre', { class: 'code', id: `${base}-panel`, role: 'tabpanel', tabindex: '0', 'data-testid': testId }, code);
  const buttons = tabs.map((t, i) => {
    const b = h('button', { type: 'button', role: 'tab', class: 'tab', id: `${base}-tab-${i}`, 'aria-controls': pre.id }, t.label);
    b.addEventListener('click', () => select(i));
    b.addEventListener('keydown', (e) => {
      const delta = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!delta) return;
      e.preventDefault();
      const next = (current + delta + tabs.length) % tabs.length;
      select(next);
      buttons[next].focus();
    });
    return b;
  });
  function select(i) {
    current = i;
    buttons.forEach((b, j) => {
      b.setAttribute('aria-selected', String(i === j));
      b.tabIndex = i === j ? 0 : -1;
    });
    pre.setAttribute('aria-labelledby', buttons[i].id);
    code.textContent = texts[i];
  }
  const copy = copyButton(() => texts[current], { what: 'code' });
  const el = h('div', { class: 'code-tabs' },
    h('div', { class: 'tabs-bar' }, h('div', { class: 'tabs', role: 'tablist', 'aria-label': label }, buttons), copy),
    pre);
  select(0);
  return {
    el,
    update(newTabs) {
      texts = newTabs.map((t) => t.text);
      code.textContent = texts[current];
    },
  };
}
