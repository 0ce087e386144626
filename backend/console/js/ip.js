// IP whitelist entries: an IPv4 or IPv6 address, or a CIDR block of either (SPEC §4). Checked as
// the user types so mistakes show before the gateway would refuse every call.

function ipv4(text) {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  return parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

function ipv6(text) {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return false;
  let groups = 8;
  let head = text;
  // An embedded IPv4 tail (::ffff:192.0.2.1) takes the place of two groups.
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    if (!ipv4(text.slice(lastColon + 1))) return false;
    head = text.slice(0, lastColon + 1);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
    groups = 6;
  }
  const halves = head.split('::');
  if (halves.length > 2) return false;
  const hex = (g) => /^[0-9a-fA-F]{1,4}$/.test(g);
  const split = (part) => (part === '' ? [] : part.split(':'));
  if (halves.length === 2) {
    const left = split(halves[0]);
    const right = split(halves[1]);
    return [...left, ...right].every(hex) && left.length + right.length < groups;
  }
  const all = split(head);
  return all.length === groups && all.every(hex);
}

/**
 * Returns null for a valid entry, else a short reason. Host bits set in a CIDR
 * (`10.0.0.1/8`) are accepted, as the gateway's parser does.
 */
export function ipEntryError(raw) {
  const text = raw.trim();
  if (text === '') return 'Enter an address or CIDR block, or remove this row.';
  const [addr, prefix, ...rest] = text.split('/');
  if (rest.length > 0) return 'Only one “/” is allowed.';
  const v4 = ipv4(addr);
  const v6 = !v4 && ipv6(addr);
  if (!v4 && !v6) {
    if (/^[0-9.]+$/.test(addr)) return 'Not a valid IPv4 address (four numbers 0–255, e.g. 203.0.113.7).';
    if (addr.includes(':')) return 'Not a valid IPv6 address (e.g. 2001:db8::1).';
    return 'Not an IP address. Use e.g. 203.0.113.7, 198.51.100.0/24 or 2001:db8::/32.';
  }
  if (prefix === undefined) return null;
  const max = v4 ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefix) || Number(prefix) > max) {
    return `The prefix length after “/” must be 0–${max} for IPv${v4 ? 4 : 6}.`;
  }
  return null;
}
