// The Playground's request written as curl, JavaScript (fetch) and Python (requests) code. The
// secret is always masked: snippets get copied into tickets and chats.

export function maskSecret(secret) {
  if (!secret) return 'sk_live_••••••••';
  const prefix = secret.startsWith('sk_live_') ? 'sk_live_' : '';
  return `${prefix}••••••••`;
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

function pyLiteral(value, indent = 0) {
  const pad = '    '.repeat(indent + 1);
  const end = '    '.repeat(indent);
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    return `[\n${value.map((v) => `${pad}${pyLiteral(v, indent + 1)},`).join('\n')}\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return '{}';
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v, indent + 1)},`).join('\n')}\n${end}}`;
}

function indentJson(value, spaces) {
  return JSON.stringify(value, null, 2).split('\n').join(`\n${' '.repeat(spaces)}`);
}

/** { curl, javascript, python } for one request. `key` may be partial; the secret is masked. */
export function snippets({ method, url, body, key, secret }) {
  const shownKey = key || 'pk_live_…';
  const masked = maskSecret(secret);
  const hasBody = body !== undefined;

  const curl = [
    `curl -X ${method} ${shellQuote(url)}`,
    `  -H ${shellQuote(`Authorization: Bearer ${shownKey}`)}`,
    `  -H ${shellQuote(`X-Api-Secret: ${masked}`)}`,
    ...(hasBody ? ['  -H \'Content-Type: application/json\'', `  -d ${shellQuote(JSON.stringify(body))}`] : []),
  ].join(' \\\n');

  const javascript = [
    `const response = await fetch(${JSON.stringify(url)}, {`,
    `  method: ${JSON.stringify(method)},`,
    '  headers: {',
    `    "Authorization": ${JSON.stringify(`Bearer ${shownKey}`)},`,
    `    "X-Api-Secret": ${JSON.stringify(masked)}, // load it from your server's secret store`,
    ...(hasBody ? ['    "Content-Type": "application/json",'] : []),
    '  },',
    ...(hasBody ? [`  body: JSON.stringify(${indentJson(body, 2)}),`] : []),
    '});',
    'console.log(response.status, await response.json());',
  ].join('\n');

  const fn = method.toLowerCase();
  const python = [
    'import requests',
    '',
    `response = requests.${fn}(`,
    `    ${JSON.stringify(url)},`,
    '    headers={',
    `        "Authorization": ${JSON.stringify(`Bearer ${shownKey}`)},`,
    `        "X-Api-Secret": ${JSON.stringify(masked)},  # load it from your secret store`,
    '    },',
    ...(hasBody ? [`    json=${pyLiteral(body, 1)},`] : []),
    '    timeout=15,',
    ')',
    'print(response.status_code, response.json())',
  ].join('\n');

  return { curl, javascript, python };
}
