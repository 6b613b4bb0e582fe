// The Keelson dashboard's script: reads and watches the ordinary API from the same origin.
// Every request carries `X-Keelson-UI: 1`, which makes the API accept the login cookie.
// Data is only ever put into the page as text nodes (never as HTML).
'use strict';

(function () {
  const UI_HEADERS = { 'X-Keelson-UI': '1', Accept: 'application/json' };
  /** The most rows a list renders (the rest are counted, not drawn). */
  const ROWS_MAX = 500;
  /** The most log lines kept on the pod page. */
  const LOG_LINES_MAX = 1000;
  /** The most bytes of an unfinished watch line held before the stream is dropped. */
  const WATCH_LINE_BYTES_MAX = 8 * 1024 * 1024;
  /** How long a list waits to redraw after a watch event (events arriving together draw once). */
  const REDRAW_DELAY_MS = 150;
  const RETRY_DELAY_MS = 2000;
  const OVERVIEW_REFRESH_MS = 10000;

  const body = document.body;
  const page = body.dataset.page;
  const content = document.getElementById('content');
  const statusBox = document.getElementById('status');
  // A fault of this script is shown, not left to the console.
  window.addEventListener('error', (e) => showStatus('The dashboard failed: ' + e.message));
  window.addEventListener('unhandledrejection', (e) =>
    showStatus('The dashboard failed: ' + ((e.reason && e.reason.message) || e.reason)),
  );

  // ---- DOM helpers -------------------------------------------------------------------

  /** An element with attributes and children; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') e.className = value;
      else if (key.startsWith('on')) e.addEventListener(key.slice(2), value);
      else e.setAttribute(key, value === true ? '' : String(value));
    }
    append(e, children);
    return e;
  }

  function append(parent, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function showStatus(message, info) {
    statusBox.textContent = message || '';
    statusBox.className = info ? 'info' : '';
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // ---- API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
    }
  }

  function loginExpired() {
    location.assign('/ui/login');
    return new ApiError(401, 'the login has expired');
  }

  async function api(method, path, payload, contentType) {
    const headers = Object.assign({}, UI_HEADERS);
    if (payload !== undefined) headers['Content-Type'] = contentType || 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: payload,
      credentials: 'same-origin',
    });
    if (response.status === 401) throw loginExpired();
    const text = await response.text();
    let value = null;
    try {
      value = JSON.parse(text);
    } catch (_) {
      value = null;
    }
    if (!response.ok) {
      const message = (value && value.message) || text || response.statusText;
      throw new ApiError(response.status, message);
    }
    return value;
  }

  /** Reads a streamed body line by line, calling `onLine` for each complete line. */
  async function readLines(response, onLine) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (onLine(line) === false) {
          reader.cancel();
          return;
        }
      }
      if (buffered.length > WATCH_LINE_BYTES_MAX) {
        reader.cancel();
        throw new Error('a streamed line is too long');
      }
    }
  }

  /**
   * A list kept current by a watch: lists, then watches from the list's resourceVersion,
   * resumes from the last version seen when the stream ends, and lists again after 410.
   */
  class Collection {
    constructor(path, onChange) {
      this.path = path;
      this.onChange = onChange;
      this.items = new Map();
      this.resourceVersion = '';
      this.timer = null;
      this.live = false;
    }

    static key(object) {
      const meta = object.metadata || {};
      return (meta.namespace || '') + '/' + (meta.name || '');
    }

    async run() {
      for (;;) {
        try {
          if (!this.resourceVersion) await this.list();
          await this.watch();
        } catch (e) {
          this.setLive(false);
          if (e.code === 401) return;
          showStatus('Lost the live view of ' + this.path + ': ' + e.message + ' (retrying)');
          await sleep(RETRY_DELAY_MS);
        }
      }
    }

    async list() {
      const list = await api('GET', this.path);
      this.items = new Map((list.items || []).map((o) => [Collection.key(o), o]));
      this.resourceVersion = (list.metadata && list.metadata.resourceVersion) || '';
      showStatus('');
      this.onChange(this);
    }

    async watch() {
      const separator = this.path.includes('?') ? '&' : '?';
      const url =
        this.path + separator + 'watch=1&allowWatchBookmarks=true&resourceVersion=' +
        encodeURIComponent(this.resourceVersion);
      const response = await fetch(url, { headers: UI_HEADERS, credentials: 'same-origin' });
      if (response.status === 401) throw loginExpired();
      if (response.status === 410) {
        this.resourceVersion = '';
        return;
      }
      if (!response.ok) throw new ApiError(response.status, await response.text());
      this.setLive(true);
      await readLines(response, (line) => {
        if (!line.trim()) return true;
        const event = JSON.parse(line);
        return this.apply(event);
      });
      this.setLive(false);
    }

    /** Applies one watch event; false ends the stream (the list must be read again). */
    apply(event) {
      const object = event.object || {};
      if (event.type === 'ERROR') {
        // 410 Expired: the version is compacted away; anything else: start over too.
        this.resourceVersion = '';
        return false;
      }
      const version = object.metadata && object.metadata.resourceVersion;
      if (version) this.resourceVersion = version;
      if (event.type === 'BOOKMARK') return true;
      const key = Collection.key(object);
      if (event.type === 'DELETED') this.items.delete(key);
      else this.items.set(key, object);
      this.schedule();
      return true;
    }

    schedule() {
      if (this.timer) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.onChange(this);
      }, REDRAW_DELAY_MS);
    }

    setLive(live) {
      this.live = live;
      for (const dot of document.querySelectorAll('.live')) {
        dot.classList.toggle('on', live);
        dot.title = live ? 'live: watching for changes' : 'not watching';
      }
    }
  }

  // ---- formatting --------------------------------------------------------------------

  function age(timestamp) {
    if (!timestamp) return '';
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
    if (seconds < 120) return seconds + 's';
    const minutes = Math.floor(seconds / 60);
    if (minutes < 120) return minutes + 'm';
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + 'h';
    return Math.floor(hours / 24) + 'd';
  }

  function podStatus(pod) {
    const meta = pod.metadata || {};
    const status = pod.status || {};
    if (meta.deletionTimestamp) return 'Terminating';
    for (const c of status.containerStatuses || []) {
      const state = c.state || {};
      if (state.waiting && state.waiting.reason) return state.waiting.reason;
      if (state.terminated && state.terminated.reason && status.phase !== 'Succeeded') {
        return state.terminated.reason;
      }
    }
    return status.phase || 'Pending';
  }

  function statusClass(text) {
    if (['Running', 'Succeeded', 'Active', 'True', 'Normal', 'Ready'].includes(text)) return 'ok';
    if (['Pending', 'ContainerCreating', 'Terminating', 'Unknown'].includes(text)) return 'warn';
    return 'bad';
  }

  function podReady(pod) {
    const statuses = (pod.status && pod.status.containerStatuses) || [];
    const total = ((pod.spec && pod.spec.containers) || []).length;
    return statuses.filter((c) => c.ready).length + '/' + total;
  }

  function podRestarts(pod) {
    const statuses = (pod.status && pod.status.containerStatuses) || [];
    return statuses.reduce((sum, c) => sum + (c.restartCount || 0), 0);
  }

  function podLink(namespace, name) {
    return el(
      'a',
      { href: '/ui/pods/' + encodeURIComponent(namespace) + '/' + encodeURIComponent(name) },
      name,
    );
  }

  function servicePorts(svc) {
    return ((svc.spec && svc.spec.ports) || [])
      .map((p) => p.port + (p.nodePort ? ':' + p.nodePort : '') + '/' + (p.protocol || 'TCP'))
      .join(', ');
  }

  /** CPU quantity in cores (`250m`, `2`, `1500000n`). */
  function cpuCores(q) {
    if (!q) return NaN;
    const s = String(q);
    if (s.endsWith('n')) return parseFloat(s) / 1e9;
    if (s.endsWith('u')) return parseFloat(s) / 1e6;
    if (s.endsWith('m')) return parseFloat(s) / 1e3;
    return parseFloat(s);
  }

  /** Memory quantity in bytes. */
  function memoryBytes(q) {
    if (!q) return NaN;
    const units = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
    const m = /^([0-9.]+)([A-Za-z]*)$/.exec(String(q));
    if (!m) return NaN;
    return parseFloat(m[1]) * (units[m[2]] || 1);
  }

  function usageCell(used, capacity, text) {
    if (!Number.isFinite(used)) return el('span', { class: 'muted' }, 'n/a');
    const share = Number.isFinite(capacity) && capacity > 0 ? Math.min(1, used / capacity) : 0;
    return el(
      'span',
      {},
      el('span', { class: 'bar' }, el('span', { style: 'width:' + Math.round(share * 100) + '%' })),
      text + (share ? ' (' + Math.round(share * 100) + '%)' : ''),
    );
  }

  // ---- tables ------------------------------------------------------------------------

  /**
   * A table drawn from a collection: rows keyed by object; a row is rebuilt only when its
   * object's resourceVersion changes, and its action cell (inputs a user may be typing in)
   * is kept across rebuilds.
   */
  class LiveTable {
    constructor(options) {
      this.columns = options.columns; // [{title, cell(o)}]
      this.actions = options.actions; // optional o => Node
      this.sort = options.sort;
      this.noun = options.noun;
      this.filter = options.filter || (() => true);
      this.rows = new Map(); // key -> {row, version, actionCell}
      this.tbody = el('tbody');
      this.note = el('p', { class: 'note', id: 'table-note' });
      const head = this.columns.map((c) => el('th', {}, c.title));
      if (this.actions) head.push(el('th', {}, 'Actions'));
      this.table = el('table', { id: 'list' }, el('thead', {}, el('tr', {}, head)), this.tbody);
      this.drawn = false;
    }

    draw(collection) {
      const objects = Array.from(collection.items.values()).filter(this.filter);
      objects.sort(this.sort);
      const shown = objects.slice(0, ROWS_MAX);
      const keep = new Set();
      const rows = shown.map((o) => {
        const key = Collection.key(o);
        keep.add(key);
        const version = (o.metadata && o.metadata.resourceVersion) || '';
        let entry = this.rows.get(key);
        if (!entry) {
          const row = el('tr', { 'data-key': key, class: this.drawn ? 'new' : undefined });
          entry = { row, version: null, actionCell: this.actions ? el('td', { class: 'actions' }, this.actions(o)) : null };
          this.rows.set(key, entry);
        }
        if (entry.version !== version) {
          entry.version = version;
          entry.object = o;
          const cells = this.columns.map((c) => el('td', {}, c.cell(o)));
          if (entry.actionCell) cells.push(entry.actionCell);
          entry.row.replaceChildren(...cells);
        }
        return entry.row;
      });
      for (const key of Array.from(this.rows.keys())) if (!keep.has(key)) this.rows.delete(key);
      this.tbody.replaceChildren(...rows);
      if (objects.length === 0) {
        this.tbody.append(
          el('tr', {}, el('td', { colspan: this.columns.length + (this.actions ? 1 : 0), class: 'muted' }, 'No ' + this.noun + '.')),
        );
      }
      this.note.textContent =
        objects.length > shown.length
          ? 'Showing ' + shown.length + ' of ' + objects.length + ' ' + this.noun + ' (narrow by namespace to see the rest).'
          : objects.length + ' ' + this.noun + '.';
      this.drawn = true;
    }
  }

  function byNamespaceName(a, b) {
    return Collection.key(a).localeCompare(Collection.key(b));
  }

  /** A two-step delete button: the first click arms it, the second deletes. */
  function deleteButton(label, path, onDone) {
    const button = el('button', { class: 'danger', type: 'button' }, label);
    let armed = null;
    button.addEventListener('click', async () => {
      if (!armed) {
        button.textContent = 'Confirm delete';
        button.classList.add('armed');
        armed = setTimeout(() => {
          armed = null;
          button.textContent = label;
          button.classList.remove('armed');
        }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.disabled = true;
      try {
        await api('DELETE', path);
        showStatus('Deleted ' + path.split('/').pop() + '.', true);
        if (onDone) onDone();
      } catch (e) {
        showStatus('Delete failed: ' + e.message);
        button.disabled = false;
        button.textContent = label;
        button.classList.remove('armed');
      }
    });
    return button;
  }

  function namespaceParam() {
    return new URLSearchParams(location.search).get('namespace') || '';
  }

  /** The namespace selector of list pages (reloads the page with `?namespace=`). */
  function namespaceSelector() {
    const current = namespaceParam();
    const select = el('select', { id: 'namespace', 'aria-label': 'Namespace' }, el('option', { value: '' }, 'All namespaces'));
    if (current) select.append(el('option', { value: current, selected: true }, current));
    api('GET', '/api/v1/namespaces')
      .then((list) => {
        for (const ns of list.items || []) {
          const name = ns.metadata.name;
          if (name !== current) select.append(el('option', { value: name }, name));
        }
      })
      .catch(() => {});
    select.addEventListener('change', () => {
      const params = new URLSearchParams(location.search);
      if (select.value) params.set('namespace', select.value);
      else params.delete('namespace');
      location.search = params.toString();
    });
    return el('label', {}, 'Namespace ', select);
  }

  function collectionPath(root, plural) {
    const ns = namespaceParam();
    return ns ? root + '/namespaces/' + encodeURIComponent(ns) + '/' + plural : root + '/' + plural;
  }

  function listPage(options) {
    const table = new LiveTable(options);
    content.replaceChildren(
      el('div', { class: 'toolbar' }, namespaceSelector(), el('span', {}, el('span', { class: 'live' }), 'live')),
      table.note,
      table.table,
    );
    const collection = new Collection(options.path, (c) => table.draw(c));
    collection.run();
  }

  // ---- pages -------------------------------------------------------------------------

  function podsPage() {
    listPage({
      noun: 'pods',
      path: collectionPath('/api/v1', 'pods'),
      sort: byNamespaceName,
      columns: [
        { title: 'Name', cell: (p) => podLink(p.metadata.namespace, p.metadata.name) },
        { title: 'Namespace', cell: (p) => p.metadata.namespace },
        { title: 'Ready', cell: podReady },
        {
          title: 'Status',
          cell: (p) => {
            const s = podStatus(p);
            return el('span', { class: statusClass(s) }, s);
          },
        },
        { title: 'Restarts', cell: podRestarts },
        { title: 'Node', cell: (p) => (p.spec && p.spec.nodeName) || '' },
        { title: 'IP', cell: (p) => (p.status && p.status.podIP) || '' },
        { title: 'Age', cell: (p) => age(p.metadata.creationTimestamp) },
      ],
      actions: (p) =>
        deleteButton(
          'Delete',
          '/api/v1/namespaces/' + encodeURIComponent(p.metadata.namespace) + '/pods/' + encodeURIComponent(p.metadata.name),
        ),
    });
  }

  function scaleControl(d) {
    const path =
      '/apis/apps/v1/namespaces/' + encodeURIComponent(d.metadata.namespace) + '/deployments/' +
      encodeURIComponent(d.metadata.name) + '/scale';
    const input = el('input', {
      type: 'number',
      min: '0',
      max: '10000',
      class: 'replicas',
      'aria-label': 'Replicas of ' + d.metadata.name,
      value: (d.spec && d.spec.replicas) ?? 1,
    });
    const button = el('button', { type: 'button', class: 'primary scale' }, 'Scale');
    const form = el('span', {}, input, ' ', button);
    button.addEventListener('click', async () => {
      const replicas = Number.parseInt(input.value, 10);
      if (!Number.isInteger(replicas) || replicas < 0) {
        showStatus('Replicas must be a whole number, 0 or more.');
        return;
      }
      button.disabled = true;
      try {
        await api('PATCH', path, JSON.stringify({ spec: { replicas } }), 'application/merge-patch+json');
        showStatus('Scaled ' + d.metadata.name + ' to ' + replicas + '.', true);
      } catch (e) {
        showStatus('Scaling ' + d.metadata.name + ' failed: ' + e.message);
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  function deploymentsPage() {
    listPage({
      noun: 'deployments',
      path: collectionPath('/apis/apps/v1', 'deployments'),
      sort: byNamespaceName,
      columns: [
        { title: 'Name', cell: (d) => d.metadata.name },
        { title: 'Namespace', cell: (d) => d.metadata.namespace },
        {
          title: 'Ready',
          cell: (d) => {
            const status = d.status || {};
            const want = (d.spec && d.spec.replicas) ?? 1;
            const ready = status.readyReplicas || 0;
            return el('span', { class: ready === want ? 'ok' : 'warn' }, ready + '/' + want);
          },
        },
        { title: 'Desired', cell: (d) => String((d.spec && d.spec.replicas) ?? 1) },
        { title: 'Up-to-date', cell: (d) => String((d.status && d.status.updatedReplicas) || 0) },
        { title: 'Available', cell: (d) => String((d.status && d.status.availableReplicas) || 0) },
        { title: 'Age', cell: (d) => age(d.metadata.creationTimestamp) },
      ],
      actions: scaleControl,
    });
  }

  function servicesPage() {
    listPage({
      noun: 'services',
      path: collectionPath('/api/v1', 'services'),
      sort: byNamespaceName,
      columns: [
        { title: 'Name', cell: (s) => s.metadata.name },
        { title: 'Namespace', cell: (s) => s.metadata.namespace },
        { title: 'Type', cell: (s) => (s.spec && s.spec.type) || 'ClusterIP' },
        { title: 'Cluster IP', cell: (s) => (s.spec && s.spec.clusterIP) || '' },
        { title: 'Ports', cell: servicePorts },
        {
          title: 'Selector',
          cell: (s) =>
            Object.entries((s.spec && s.spec.selector) || {})
              .map(([k, v]) => k + '=' + v)
              .join(', '),
        },
        { title: 'Age', cell: (s) => age(s.metadata.creationTimestamp) },
      ],
    });
  }

  function eventTime(e) {
    return e.lastTimestamp || e.eventTime || (e.metadata && e.metadata.creationTimestamp) || '';
  }

  const eventColumns = [
    { title: 'Last seen', cell: (e) => age(eventTime(e)) },
    { title: 'Type', cell: (e) => el('span', { class: e.type === 'Warning' ? 'bad' : 'ok' }, e.type || '') },
    { title: 'Reason', cell: (e) => e.reason || '' },
    {
      title: 'Object',
      cell: (e) => {
        const o = e.involvedObject || {};
        const text = (o.kind || '').toLowerCase() + '/' + (o.name || '');
        return o.kind === 'Pod' && o.namespace ? el('a', { href: '/ui/pods/' + encodeURIComponent(o.namespace) + '/' + encodeURIComponent(o.name) }, text) : text;
      },
    },
    { title: 'Count', cell: (e) => String(e.count || 1) },
    { title: 'Message', cell: (e) => e.message || '' },
  ];

  function byTimeDesc(a, b) {
    return eventTime(b).localeCompare(eventTime(a)) || byNamespaceName(a, b);
  }

  function eventsPage() {
    listPage({
      noun: 'events',
      path: collectionPath('/api/v1', 'events'),
      sort: byTimeDesc,
      columns: [{ title: 'Namespace', cell: (e) => e.metadata.namespace }].concat(eventColumns),
    });
  }

  function applyPage() {
    const text = el('textarea', {
      id: 'manifest',
      spellcheck: 'false',
      placeholder: 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n...',
    });
    const results = el('div', { id: 'apply-results' });
    const button = el('button', { type: 'button', class: 'primary', id: 'apply' }, 'Apply');
    button.addEventListener('click', async () => {
      button.disabled = true;
      results.replaceChildren();
      try {
        const answer = await api('POST', '/ui/apply', text.value, 'text/plain');
        const rows = (answer.results || []).map((r) =>
          el(
            'tr',
            {},
            el('td', {}, r.object || '(unknown)'),
            el('td', {}, r.namespace || ''),
            el('td', {}, el('span', { class: r.ok ? 'ok' : 'bad' }, r.message)),
          ),
        );
        results.append(
          el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Object'), el('th', {}, 'Namespace'), el('th', {}, 'Outcome'))), el('tbody', {}, rows)),
        );
        showStatus('');
      } catch (e) {
        showStatus('Apply failed: ' + e.message);
      } finally {
        button.disabled = false;
      }
    });
    content.replaceChildren(
      el('p', { class: 'note' }, 'Paste one or more objects (YAML or JSON, documents separated by ---). They are applied as `kctl apply` does (server-side apply, field manager keelson-ui).'),
      text,
      el('p', {}, button),
      results,
    );
  }

  // ---- overview ----------------------------------------------------------------------

  function condition(node, type) {
    return ((node.status && node.status.conditions) || []).find((c) => c.type === type);
  }

  async function overviewPage() {
    const cards = el('div', { class: 'cards' });
    const masters = el('div', { id: 'masters' });
    const nodes = el('div', { id: 'nodes' });
    const namespaces = el('div', { id: 'namespaces' });
    content.replaceChildren(cards, el('h2', {}, 'Masters'), masters, el('h2', {}, 'Nodes'), nodes, el('h2', {}, 'Namespaces'), namespaces);
    for (;;) {
      try {
        await drawOverview(cards, masters, nodes, namespaces);
        showStatus('');
      } catch (e) {
        if (e.code === 401) return;
        showStatus('Cannot read the cluster: ' + e.message);
      }
      await sleep(OVERVIEW_REFRESH_MS);
    }
  }

  async function drawOverview(cards, masters, nodes, namespaces) {
    const [cluster, nodeList, nsList, podList, usage] = await Promise.all([
      api('GET', '/keelson/v1/cluster'),
      api('GET', '/api/v1/nodes'),
      api('GET', '/api/v1/namespaces'),
      api('GET', '/api/v1/pods'),
      // Node usage needs the metrics API; without it the usage columns say n/a.
      api('GET', '/apis/metrics.k8s.io/v1beta1/nodes').catch(() => null),
    ]);
    const nodeItems = nodeList.items || [];
    const readyNodes = nodeItems.filter((n) => (condition(n, 'Ready') || {}).status === 'True').length;
    const podCount = (podList.items || []).length;
    const card = (value, label, id) => el('div', { class: 'card', id }, el('div', { class: 'value' }, String(value)), el('div', { class: 'label' }, label));
    cards.replaceChildren(
      card((cluster.members || []).length, 'masters', 'card-masters'),
      card(cluster.leader || 'none', 'leader', 'card-leader'),
      card(readyNodes + '/' + nodeItems.length, 'nodes ready', 'card-nodes'),
      card(podCount, 'pods', 'card-pods'),
      card((nsList.items || []).length, 'namespaces', 'card-namespaces'),
    );

    masters.replaceChildren(
      el(
        'table',
        { id: 'masters-table' },
        el('thead', {}, el('tr', {}, ['Name', 'Role', 'API', 'Peer address', 'Voter'].map((t) => el('th', {}, t)))),
        el(
          'tbody',
          {},
          (cluster.members || []).map((m) =>
            el(
              'tr',
              { 'data-key': m.name },
              el('td', {}, m.name, m.name === cluster.answeredBy ? el('span', { class: 'muted' }, ' (this master)') : null),
              el('td', {}, m.leader ? el('span', { class: 'ok' }, 'leader') : 'follower'),
              el('td', {}, m.api || ''),
              el('td', {}, m.peer || ''),
              el('td', {}, m.voter ? 'yes' : 'no'),
            ),
          ),
        ),
      ),
      el('p', { class: 'note' }, 'Raft term ' + cluster.term + ', store revision ' + cluster.revision + ', answered by ' + cluster.answeredBy + '.'),
    );

    const usageByNode = new Map(((usage && usage.items) || []).map((u) => [u.metadata.name, u.usage || {}]));
    const nodeRows = nodeItems
      .slice()
      .sort(byNamespaceName)
      .slice(0, ROWS_MAX)
      .map((n) => {
        const ready = condition(n, 'Ready');
        const readyText = ready ? (ready.status === 'True' ? 'Ready' : 'NotReady') : 'Unknown';
        const problems = ((n.status && n.status.conditions) || [])
          .filter((c) => c.type !== 'Ready' && c.status === 'True')
          .map((c) => c.type);
        const capacity = (n.status && (n.status.allocatable || n.status.capacity)) || {};
        const used = usageByNode.get(n.metadata.name) || {};
        const cpuUsed = cpuCores(used.cpu);
        const memUsed = memoryBytes(used.memory);
        return el(
          'tr',
          { 'data-key': n.metadata.name },
          el('td', {}, n.metadata.name),
          el('td', {}, el('span', { class: statusClass(readyText) }, readyText), n.spec && n.spec.unschedulable ? ' (cordoned)' : ''),
          el('td', {}, problems.length ? el('span', { class: 'bad' }, problems.join(', ')) : el('span', { class: 'muted' }, 'none')),
          el('td', {}, usageCell(cpuUsed, cpuCores(capacity.cpu), Number.isFinite(cpuUsed) ? cpuUsed.toFixed(2) + ' / ' + (capacity.cpu || '?') + ' cores' : '')),
          el('td', {}, usageCell(memUsed, memoryBytes(capacity.memory), Number.isFinite(memUsed) ? Math.round(memUsed / 2 ** 20) + ' MiB / ' + Math.round(memoryBytes(capacity.memory) / 2 ** 20) + ' MiB' : '')),
          el('td', {}, capacity.pods || ''),
          el('td', {}, age(n.metadata.creationTimestamp)),
        );
      });
    nodes.replaceChildren(
      ...[
      el(
        'table',
        { id: 'nodes-table' },
        el('thead', {}, el('tr', {}, ['Name', 'Status', 'Pressure conditions', 'CPU used', 'Memory used', 'Pods max', 'Age'].map((t) => el('th', {}, t)))),
        el('tbody', {}, nodeRows.length ? nodeRows : el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No nodes have joined.'))),
      ),
      usage ? null : el('p', { class: 'note' }, 'Usage needs the metrics API (metrics.k8s.io), which does not answer.'),
      nodeItems.length > ROWS_MAX ? el('p', { class: 'note' }, 'Showing ' + ROWS_MAX + ' of ' + nodeItems.length + ' nodes.') : null,
      ].filter(Boolean),
    );

    namespaces.replaceChildren(
      el(
        'table',
        { id: 'namespaces-table' },
        el('thead', {}, el('tr', {}, ['Name', 'Status', 'Age'].map((t) => el('th', {}, t)))),
        el(
          'tbody',
          {},
          (nsList.items || []).slice(0, ROWS_MAX).map((ns) =>
            el(
              'tr',
              {},
              el('td', {}, el('a', { href: '/ui/pods?namespace=' + encodeURIComponent(ns.metadata.name) }, ns.metadata.name)),
              el('td', {}, el('span', { class: statusClass((ns.status && ns.status.phase) || 'Active') }, (ns.status && ns.status.phase) || 'Active')),
              el('td', {}, age(ns.metadata.creationTimestamp)),
            ),
          ),
        ),
      ),
    );
  }

  // ---- pod detail --------------------------------------------------------------------

  function podPage() {
    const namespace = body.dataset.namespace;
    const name = body.dataset.name;
    const podPath = '/api/v1/namespaces/' + encodeURIComponent(namespace) + '/pods/' + encodeURIComponent(name);
    const summary = el('div', { id: 'pod-summary' });
    const containers = el('div', { id: 'containers' });
    const eventsTable = new LiveTable({ noun: 'events', columns: eventColumns, sort: byTimeDesc });
    const logBox = el('pre', { class: 'log', id: 'log' });
    const logNote = el('p', { class: 'note', id: 'log-note' });
    const containerSelect = el('select', { id: 'log-container', 'aria-label': 'Container' });
    const actions = el(
      'div',
      { class: 'toolbar' },
      el('span', {}, el('span', { class: 'live' }), 'live'),
      deleteButton('Delete pod', podPath, () => setTimeout(() => location.assign('/ui/pods'), 800)),
    );
    content.replaceChildren(
      actions,
      summary,
      el('h2', {}, 'Containers'),
      containers,
      el('h2', {}, 'Events'),
      eventsTable.note,
      eventsTable.table,
      el('h2', {}, 'Log'),
      el('div', { class: 'toolbar' }, el('label', {}, 'Container ', containerSelect), logNote),
      logBox,
    );

    let logContainer = null;
    let seen = false;
    const pods = new Collection(
      '/api/v1/namespaces/' + encodeURIComponent(namespace) + '/pods?fieldSelector=' + encodeURIComponent('metadata.name=' + name),
      (c) => {
        const pod = c.items.get(namespace + '/' + name);
        if (!pod) {
          summary.replaceChildren(el('p', { class: seen ? 'bad' : 'muted' }, seen ? 'This pod has been deleted.' : 'No pod ' + namespace + '/' + name + '.'));
          containers.replaceChildren();
          return;
        }
        seen = true;
        drawPod(pod, summary, containers);
        const names = ((pod.spec && pod.spec.containers) || []).map((k) => k.name);
        if (containerSelect.options.length !== names.length) {
          containerSelect.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
        }
        if (!logContainer && names.length && pod.spec.nodeName) {
          logContainer = names[0];
          followLog(podPath, logContainer, logBox, logNote);
        }
      },
    );
    containerSelect.addEventListener('change', () => {
      logContainer = containerSelect.value;
      followLog(podPath, logContainer, logBox, logNote);
    });
    pods.run();
    const events = new Collection(
      '/api/v1/namespaces/' + encodeURIComponent(namespace) + '/events?fieldSelector=' +
        encodeURIComponent('involvedObject.name=' + name),
      (c) => eventsTable.draw(c),
    );
    events.run();
  }

  function drawPod(pod, summary, containers) {
    const status = pod.status || {};
    const spec = pod.spec || {};
    const phase = podStatus(pod);
    const fields = [
      ['Namespace', pod.metadata.namespace],
      ['Status', el('span', { class: statusClass(phase), id: 'pod-phase' }, phase)],
      ['Node', spec.nodeName || '(not scheduled)'],
      ['Pod IP', status.podIP || ''],
      ['Host IP', status.hostIP || ''],
      ['Created', (pod.metadata.creationTimestamp || '') + ' (' + age(pod.metadata.creationTimestamp) + ' ago)'],
      ['Started', status.startTime || ''],
      ['Labels', Object.entries(pod.metadata.labels || {}).map(([k, v]) => k + '=' + v).join(', ')],
      ['Owner', ((pod.metadata.ownerReferences || [])[0] || {}).kind ? pod.metadata.ownerReferences[0].kind + '/' + pod.metadata.ownerReferences[0].name : ''],
      [
        'Conditions',
        (status.conditions || []).map((c) => el('span', { class: c.status === 'True' ? 'ok' : 'warn' }, c.type + ' ')),
      ],
    ];
    if (status.message) fields.push(['Message', status.message]);
    summary.replaceChildren(el('dl', { class: 'fields' }, fields.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));

    const statuses = new Map((status.containerStatuses || []).map((c) => [c.name, c]));
    const rows = (spec.containers || []).map((c) => {
      const s = statuses.get(c.name) || {};
      const state = s.state || {};
      const [stateName, detail] = state.running
        ? ['Running', 'since ' + (state.running.startedAt || '')]
        : state.waiting
          ? [state.waiting.reason || 'Waiting', state.waiting.message || '']
          : state.terminated
            ? [state.terminated.reason || 'Terminated', 'exit code ' + state.terminated.exitCode]
            : ['Unknown', ''];
      const ports = (c.ports || []).map((p) => p.containerPort + '/' + (p.protocol || 'TCP')).join(', ');
      return el(
        'tr',
        { 'data-key': c.name },
        el('td', {}, c.name),
        el('td', {}, c.image || ''),
        el('td', {}, el('span', { class: statusClass(stateName) }, stateName), ' ', el('span', { class: 'muted' }, detail)),
        el('td', {}, s.ready ? 'yes' : 'no'),
        el('td', {}, String(s.restartCount || 0)),
        el('td', {}, ports),
      );
    });
    containers.replaceChildren(
      el(
        'table',
        { id: 'containers-table' },
        el('thead', {}, el('tr', {}, ['Name', 'Image', 'State', 'Ready', 'Restarts', 'Ports'].map((t) => el('th', {}, t)))),
        el('tbody', {}, rows),
      ),
    );
  }

  let logAbort = null;

  /** Follows a container's log: the last 100 lines, then new ones; at most LOG_LINES_MAX kept. */
  async function followLog(podPath, container, logBox, logNote) {
    if (logAbort) logAbort.abort();
    const abort = new AbortController();
    logAbort = abort;
    logBox.replaceChildren();
    const lines = [];
    let pending = false;
    const redraw = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 20;
        logBox.textContent = lines.join('\n');
        if (atBottom) logBox.scrollTop = logBox.scrollHeight;
      });
    };
    while (!abort.signal.aborted) {
      logNote.textContent = 'following ' + container + ' (last 100 lines, then new ones)';
      try {
        const response = await fetch(
          podPath + '/log?follow=true&tailLines=100&container=' + encodeURIComponent(container),
          { headers: UI_HEADERS, credentials: 'same-origin', signal: abort.signal },
        );
        if (response.status === 401) throw loginExpired();
        if (!response.ok) {
          const text = await response.text();
          let message = text;
          try {
            message = JSON.parse(text).message || text;
          } catch (_) {
            message = text;
          }
          throw new ApiError(response.status, message);
        }
        lines.length = 0;
        await readLines(response, (line) => {
          lines.push(line);
          if (lines.length > LOG_LINES_MAX) lines.splice(0, lines.length - LOG_LINES_MAX);
          redraw();
          return true;
        });
        logNote.textContent = 'the log stream ended; reconnecting';
      } catch (e) {
        if (abort.signal.aborted || e.code === 401) return;
        logNote.textContent = 'No log: ' + e.message + ' (retrying)';
      }
      await sleep(RETRY_DELAY_MS * 2);
    }
  }

  const pages = {
    overview: overviewPage,
    pods: podsPage,
    deployments: deploymentsPage,
    services: servicesPage,
    events: eventsPage,
    apply: applyPage,
    pod: podPage,
  };
  const render = pages[page];
  if (render) render();
})();
