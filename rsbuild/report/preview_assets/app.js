(function () {
'use strict';
const records = JSON.parse(document.getElementById('rsb-records').textContent);
const info = JSON.parse(document.getElementById('rsb-info').textContent);
const $ = (id) => document.getElementById(id);
const state = { split: '', task: '', cls: '', verdict: '', page: 0, pageSize: info.page_size };
const VERDICT_LABEL = { pass: '\u2713 passed check', fail: '\u2717 failed check', unchecked: 'unchecked', error: '\u2717 not written' };
let matched = records;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function addOptions(select, values) {
  for (const value of values) { const o = el('option', null, value); o.value = value; select.append(o); }
}
function pct(value) { return value === null || value === undefined ? '\u2013' : (100 * value).toFixed(1) + ' %'; }
function swatch(color) { const s = el('span', 'swatch'); s.style.background = color; return s; }

function captionMatches(c) {
  return (!state.task || c.task === state.task) && (!state.verdict || c.verdict === state.verdict);
}
function matches(rec) {
  if (state.split && rec.split !== state.split) return false;
  if (state.cls && !rec.classes.some((c) => c.name === state.cls)) return false;
  if (state.task || state.verdict) return rec.captions.some(captionMatches);
  return true;
}

function chip(rec) {
  const box = el('div', 'chip');
  box.style.aspectRatio = String(rec.aspect);
  const img = el('img', 'rgb'); img.loading = 'lazy'; img.decoding = 'async'; img.alt = 'chip ' + rec.key; img.src = rec.image;
  box.append(img);
  if (rec.overlay) {
    const mask = el('img', 'mask'); mask.loading = 'lazy'; mask.decoding = 'async'; mask.alt = ''; mask.src = rec.overlay;
    box.append(mask);
  }
  const referring = rec.derived.filter((r) => r.task === 'referring');
  const drawn = rec.boxes.map((b) => [b, 'box', b.label])
    .concat(referring.map((r, i) => [r.boxes[0], 'box ref', 'r' + (i + 1)]));  // the phrase is in the list below
  for (const [b, cls, text] of drawn) {
    const [x1, y1, x2, y2] = b.bbox;
    const d = el('div', cls);
    d.style.left = (100 * x1) + '%'; d.style.top = (100 * y1) + '%';
    d.style.width = (100 * (x2 - x1)) + '%'; d.style.height = (100 * (y2 - y1)) + '%';
    d.style.borderColor = b.color;
    const label = el('span', null, text); label.style.background = b.color; label.style.color = b.text;
    d.append(label); box.append(d);
  }
  return box;
}
function legend(rec) {
  const div = el('div', 'legend');
  for (const c of rec.classes) { const item = el('span'); item.append(swatch(c.color), c.name + ' ' + pct(c.share)); div.append(item); }
  return div;
}
function metadata(rec) {
  const m = rec.meta;
  const rows = [['key', rec.key], ['split', rec.split], ['POI', m.poi], ['scene', m.scene], ['date', m.date],
    ['scene cloud', m.scene_cloud === null || m.scene_cloud === undefined ? '\u2013' : m.scene_cloud + ' %'],
    ['tile cloud', pct(m.tile_cloud)],
    ['lat, lon', m.lat === null || m.lat === undefined ? '\u2013' : Number(m.lat).toFixed(5) + ', ' + Number(m.lon).toFixed(5)]];
  const dl = el('dl', 'meta');
  for (const [k, v] of rows) dl.append(el('dt', null, k), el('dd', null, v === null || v === undefined ? '\u2013' : v));
  return dl;
}
function captions(rec) {
  const ul = el('ul', 'captions');
  for (const c of rec.captions) {
    const li = el('li', 'cap verdict-' + c.verdict + ((state.task || state.verdict) && !captionMatches(c) ? ' dim' : ''));
    li.dataset.verdict = c.verdict; li.dataset.task = c.task;
    const head = el('div', 'head');
    head.append(el('span', 'badge', VERDICT_LABEL[c.verdict] || c.verdict), el('b', null, c.task + (c.class ? ' \u00b7 ' + c.class : '')), ' \u00b7 ' + (c.annotator || 'unknown annotator'));
    li.append(head);
    if (c.text) li.append(el('p', 'text', c.text));
    if (c.reasons.length) { const r = el('ul', 'reasons'); for (const reason of c.reasons) r.append(el('li', null, reason)); li.append(r); }
    ul.append(li);
  }
  if (!rec.captions.length) ul.append(el('li', 'cap', 'no captions'));
  return ul;
}
function derived(rec) {
  const details = el('details', 'derived');
  if (!rec.derived.length) return details;
  const counts = {};
  for (const r of rec.derived) counts[r.task] = (counts[r.task] || 0) + 1;
  details.append(el('summary', null, 'derived rows: ' + Object.entries(counts).map(([t, n]) => t + ' ' + n).join(', ')));
  const ol = el('ol', 'rows');
  let ref = 0;
  for (const r of rec.derived) {
    const li = el('li', 'row task-' + r.task);
    const tag = r.task === 'referring' ? 'r' + (++ref) : (r.kind || r.task);
    li.append(el('span', 'badge', tag), el('span', 'q', r.prompt), el('span', 'a', r.answer));
    ol.append(li);
  }
  details.append(ol);
  return details;
}
function card(rec) {
  const article = el('article', 'card');
  article.dataset.key = rec.key; article.dataset.split = rec.split;
  article.append(chip(rec), legend(rec), metadata(rec), captions(rec), derived(rec));
  return article;
}

function render() {
  const pages = Math.max(1, Math.ceil(matched.length / state.pageSize));
  state.page = Math.min(Math.max(state.page, 0), pages - 1);
  const start = state.page * state.pageSize;
  $('rsb-grid').replaceChildren(...matched.slice(start, start + state.pageSize).map(card));
  $('rsb-count').textContent = String(matched.length);
  $('rsb-page').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
  $('rsb-prev').disabled = state.page === 0;
  $('rsb-next').disabled = state.page >= pages - 1;
  $('rsb-empty').hidden = matched.length > 0;
}
function applyFilters() {
  state.split = $('rsb-split').value; state.task = $('rsb-task').value;
  state.cls = $('rsb-class').value; state.verdict = $('rsb-verdict').value;
  matched = records.filter(matches);
  state.page = 0;
  render();
}

addOptions($('rsb-split'), info.splits);
addOptions($('rsb-task'), info.tasks);
addOptions($('rsb-class'), info.legend.map((c) => c.name));
addOptions($('rsb-verdict'), info.verdicts);
addOptions($('rsb-page-size'), [...new Set([info.page_size, 12, 24, 48, 96])].sort((a, b) => a - b));
$('rsb-page-size').value = String(info.page_size);
for (const c of info.legend) { const item = el('span'); item.append(swatch(c.color), c.name); $('rsb-legend').append(item); }
const chosen = Object.entries(info.filters).filter(([, values]) => values.length).map(([k, values]) => k + '=' + values.join(','));
if (chosen.length || info.scanned !== records.length) {
  $('rsb-note').textContent = 'This page holds ' + records.length + ' of the ' + info.scanned + ' samples read'
    + (chosen.length ? ' (written with filters ' + chosen.join(' ') + ')' : '') + '.';
  $('rsb-note').hidden = false;
}
for (const id of ['rsb-split', 'rsb-task', 'rsb-class', 'rsb-verdict']) $(id).addEventListener('change', applyFilters);
$('rsb-page-size').addEventListener('change', () => { state.pageSize = Number($('rsb-page-size').value); state.page = 0; render(); });
$('rsb-prev').addEventListener('click', () => { state.page -= 1; render(); window.scrollTo(0, 0); });
$('rsb-next').addEventListener('click', () => { state.page += 1; render(); window.scrollTo(0, 0); });
$('rsb-opacity').addEventListener('input', (e) => document.documentElement.style.setProperty('--mask-opacity', e.target.value));
$('rsb-boxes').addEventListener('change', (e) => document.body.classList.toggle('hide-boxes', !e.target.checked));
$('rsb-refs').addEventListener('change', (e) => document.body.classList.toggle('hide-refs', !e.target.checked));
$('rsb-raw').addEventListener('change', (e) => document.body.classList.toggle('raw-chip', e.target.checked));
$('rsb-stats').textContent = info.header;
applyFilters();
})();
