// vraagbaak archive search: a static index of threads, read in the browser, no server.
//
// The index (written by src/archive/search.rs, whose module docs describe the files and the
// ranking) is a set of small scripts that call VB.f(name, data); they are loaded with
// <script> elements, so search also works when the archive is opened from disk (file://),
// where a page may not fetch files. A query loads search/meta.js, one term file per word,
// the figures of the threads that have every word, and the result lines of the page shown.
//
// Folding, stopwords, ranking and snippets follow search.rs step by step (its Searcher is
// the reference the browser test compares with); the constants come from meta.js.
// Everything from the index is put on the page with textContent and DOM methods only.
(function () {
  'use strict';
  var app = document.getElementById('search-app');
  if (!app) { return; }
  var root = app.getAttribute('data-root') || '';
  var status = document.getElementById('search-status');
  var list = document.getElementById('search-results');
  var pager = document.getElementById('search-pager');
  var VB = window.VB = window.VB || {};
  var files = {}, waiting = {};
  VB.loaded = [];
  VB.f = function (name, data) { files[name] = data; };

  function text(key) { return app.getAttribute('data-' + key) || ''; }
  function fill(s, vals) {
    return s.replace(/\{(\w+)\}/g, function (m, k) { return vals[k] !== undefined ? String(vals[k]) : m; });
  }
  function path(name) {
    return root + 'search/' + (name.lastIndexOf('x-', 0) === 0 ? 'x/' + name.slice(2) : name) + '.js';
  }
  function load(name) {
    if (files[name] !== undefined) { return Promise.resolve(files[name]); }
    if (waiting[name]) { return waiting[name]; }
    waiting[name] = new Promise(function (resolve) {
      var s = document.createElement('script');
      s.src = path(name);
      s.onload = function () {
        VB.loaded.push(name);
        if (files[name] === undefined) { files[name] = null; }
        resolve(files[name]);
      };
      s.onerror = function () { files[name] = null; resolve(null); };
      document.head.appendChild(s);
    });
    return waiting[name];
  }

  // ---- words: as fold(), word_parts(), tokens() and query_terms() in search.rs ----
  var WORD = /[\p{L}\p{N}\p{M}]+/gu;
  var WORD_CHAR = /^[\p{L}\p{N}\p{M}]$/u;
  var stop = {};
  function fold(s) { return s.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase(); }
  function parts(word) {
    if (/^[a-z0-9]+$/.test(word)) { return [word]; }
    return fold(word).split(/[^\p{L}\p{N}]+/u).filter(function (p) { return p.length > 0; });
  }
  function tokens(s) {
    var out = [];
    (s.match(WORD) || []).forEach(function (w) {
      parts(w).forEach(function (t) {
        var n = Array.from(t).length;
        if (n >= 2 && n <= 40 && !stop[t]) { out.push(t); }
      });
    });
    return out;
  }
  function queryTags(q) {
    var out = [];
    q.split(/\s+/).forEach(function (w) {
      if (w.charAt(0) !== '#') { return; }
      var tag = fold(w.slice(1).replace(/[,.;:!?)]+$/, ''));
      if (tag !== '' && out.indexOf(tag) < 0) { out.push(tag); }
    });
    return out;
  }
  function queryTerms(q, meta) {
    var seen = {}, out = [];
    var words = q.split(/\s+/).filter(function (w) { return w.charAt(0) !== '#'; }).join(' ');
    tokens(words).forEach(function (t) {
      if (!seen[t]) { seen[t] = true; out.push({ term: t, prefix: false }); }
    });
    if (out.length > 0) {
      var last = out[out.length - 1];
      last.prefix = Array.from(last.term).length >= meta.pmin;
    }
    return out;
  }

  // ---- files: as shard_of() and shard_file_part() ----
  function shardOf(term, split) {
    var chars = Array.from(term), k = Math.min(2, chars.length);
    for (;;) {
      var p = chars.slice(0, k).join('');
      if (!split[p]) { return p; }
      if (k >= chars.length) { return p + '$'; }
      k++;
    }
  }
  function filePart(key) {
    return Array.from(key).map(function (c) {
      if (/^[a-z0-9]$/.test(c)) { return c; }
      if (c === '$') { return '-'; }
      return '_' + c.codePointAt(0).toString(16) + '_';
    }).join('');
  }
  function postings(flat) {
    var m = new Map(), id = 0;
    for (var i = 0; i + 1 < flat.length; i += 2) { id += flat[i]; m.set(id, flat[i + 1]); }
    return m;
  }

  // ---- ranking: as rank() ----
  function ids(w) {
    var s = new Set();
    w.forEach(function (e) { e.p.forEach(function (_, id) { s.add(id); }); });
    return s;
  }
  // as candidates(): the threads with every word and every tag (tags: sets of ids)
  function candidates(words, tags) {
    var sets = words.map(ids).concat(tags);
    if (sets.length === 0) { return []; }
    var out = Array.from(sets[0]);
    sets.slice(1).forEach(function (has) {
      out = out.filter(function (id) { return has.has(id); });
    });
    return out;
  }
  function rank(meta, words, tags, figures) {
    var nf = Math.max(meta.n, 1), avgdl = Math.max(meta.dl / nf, 1);
    var cands = candidates(words, tags);
    var out = [];
    cands.forEach(function (id) {
      var f = figures.get(id);
      if (!f) { return; }
      var norm = 1 - meta.b + meta.b * f[0] / avgdl;
      var score = 0;
      words.forEach(function (w) {
        var best = 0;
        w.forEach(function (e) {
          var code = e.p.get(id);
          if (code === undefined) { return; }
          var df = e.p.size;
          var idf = Math.log(1 + (nf - df + 0.5) / (df + 0.5));
          var tf = meta.ws * (code % 4) + Math.floor(code / 4) / norm;
          best = Math.max(best, e.w * idf * tf * (meta.k1 + 1) / (tf + meta.k1));
        });
        score += best;
      });
      if (words.length === 0) { score = 1; }
      out.push([id, score * (1 + meta.boost * f[1])]);
    });
    out.sort(function (a, b) {
      var ka = Math.round(a[1] * 1e6), kb = Math.round(b[1] * 1e6);
      return kb !== ka ? kb - ka : b[0] - a[0];
    });
    return out;
  }

  // ---- snippets: as snippet() ----
  function isWord(c) { return WORD_CHAR.test(c); }
  function matchTerm(word, terms) {
    var ps = parts(word);
    for (var i = 0; i < ps.length; i++) {
      for (var j = 0; j < terms.length; j++) {
        var t = terms[j];
        if (ps[i] === t.term || (t.prefix && ps[i].lastIndexOf(t.term, 0) === 0)) { return j; }
      }
    }
    return -1;
  }
  function snippet(texts, terms, width) {
    var LEAD = 30, best = null, wordsOf = [];
    texts.forEach(function (t, ti) {
      var chars = Array.from(t), words = [], hits = [], i = 0;
      while (i < chars.length) {
        if (!isWord(chars[i])) { i++; continue; }
        var s = i;
        while (i < chars.length && isWord(chars[i])) { i++; }
        var m = matchTerm(chars.slice(s, i).join(''), terms);
        if (m >= 0) { hits.push([s, i, m]); }
        words.push([s, i, m >= 0]);
      }
      hits.forEach(function (h) {
        var start = Math.max(0, h[0] - LEAD);
        var inside = hits.filter(function (x) { return x[0] >= start && x[1] <= start + width; });
        var distinct = new Set(inside.map(function (x) { return x[2]; })).size;
        if (!best || distinct > best[2] || (distinct === best[2] && inside.length > best[3])) {
          best = [ti, start, distinct, inside.length];
        }
      });
      wordsOf.push(words);
    });
    var ti = best ? best[0] : 0, start = best ? best[1] : 0;
    if (ti >= texts.length) { return []; }
    var chars = Array.from(texts[ti]);
    if (start > 0) {
      while (start < chars.length && isWord(chars[start - 1]) && isWord(chars[start])) { start++; }
      while (start < chars.length && /\s/.test(chars[start])) { start++; }
    }
    var end = Math.min(start + width, chars.length);
    if (end < chars.length && isWord(chars[end - 1]) && isWord(chars[end])) {
      var e = end;
      while (e > start && isWord(chars[e - 1])) { e--; }
      if (e > start) { end = e; }
    }
    while (end > start && /\s/.test(chars[end - 1])) { end--; }
    var out = [];
    function push(s, hl) {
      if (s.length === 0) { return; }
      var last = out[out.length - 1];
      if (last && !last[1] && !hl) { last[0] += s; } else { out.push([s, hl]); }
    }
    if (start > 0) { push('…', false); }
    var pos = start;
    wordsOf[ti].forEach(function (w) {
      if (!w[2] || w[0] < start || w[1] > end) { return; }
      push(chars.slice(pos, w[0]).join(''), false);
      push(chars.slice(w[0], w[1]).join(''), true);
      pos = w[1];
    });
    push(chars.slice(pos, end).join(''), false);
    if (end < chars.length) { push('…', false); }
    return out;
  }

  // ---- the page ----
  function say(s) { status.textContent = s; }
  function finish(total, ids, page) {
    VB.result = { total: total, ids: ids, page: page };
    app.setAttribute('data-state', 'done');
  }
  function answers(n) {
    if (n === 0) { return text('no-answer'); }
    if (n === 1) { return text('answer-one'); }
    return fill(text('answers'), { n: n });
  }
  function header(total, q) {
    say(total === 1 ? fill(text('result-one'), { q: q }) : fill(text('results'), { n: total, q: q }));
  }
  function link(label, q, page, rel) {
    var a = document.createElement('a');
    a.href = 'search.html?q=' + encodeURIComponent(q) + '&p=' + page;
    a.rel = rel;
    a.textContent = label;
    return a;
  }
  function item(id, rec, terms, meta) {
    var li = document.createElement('li');
    li.className = 'result';
    li.setAttribute('data-thread', String(id));
    var a = document.createElement('a');
    a.href = root + rec.u;
    a.textContent = rec.s || text('no-subject');
    li.appendChild(a);
    var m = document.createElement('span');
    m.className = 'meta';
    if (rec.st === 2) {
      var st = document.createElement('span');
      st.className = 'state solved';
      st.textContent = text('solved');
      m.appendChild(st);
      m.appendChild(document.createTextNode(' · '));
    }
    var n = document.createElement('span');
    n.className = 'answers';
    n.textContent = answers(rec.a);
    m.appendChild(n);
    m.appendChild(document.createTextNode(' · ' + rec.d));
    li.appendChild(m);
    var p = document.createElement('p');
    p.className = 'snippet';
    snippet(rec.t || [], terms, meta.snip).forEach(function (piece) {
      if (piece[1]) {
        var mark = document.createElement('mark');
        mark.textContent = piece[0];
        p.appendChild(mark);
      } else {
        p.appendChild(document.createTextNode(piece[0]));
      }
    });
    li.appendChild(p);
    return li;
  }
  function run(q, page) {
    list.textContent = '';
    pager.textContent = '';
    if (q.trim() === '') { say(''); finish(0, [], page); return; }
    load('meta').then(function (meta) {
      if (!meta) { say(text('none')); finish(0, [], page); return null; }
      stop = {};
      meta.stop.forEach(function (w) { stop[w] = true; });
      var split = {};
      meta.split.forEach(function (p) { split[p] = true; });
      var terms = queryTerms(q, meta);
      var tags = queryTags(q);
      if (terms.length === 0 && tags.length === 0) {
        say(fill(text('results'), { n: 0, q: q }) + ' ' + text('common'));
        finish(0, [], page);
        return null;
      }
      var tagged = Promise.all(tags.map(function (tag) {
        var term = '#' + tag;
        return load('t-' + filePart(shardOf(term, split))).then(function (file) {
          file = file || {};
          return Object.prototype.hasOwnProperty.call(file, term) ? ids([{ p: postings(file[term]) }]) : null;
        });
      }));
      return tagged.then(function (tagSets) {
        if (tagSets.some(function (t) { return t === null; })) { return show(meta, q, page, terms, []); }
        return byWords(meta, q, page, terms, tagSets, split);
      });
    });
  }
  // The postings of every word, then the figures of the threads that have every word and tag.
  function byWords(meta, q, page, terms, tagSets, split) {
    return Promise.all(terms.map(function (t) {
      var key = shardOf(t.term, split);
      return load('t-' + filePart(key)).then(function (file) {
        file = file || {};
        var w = [];
        if (Object.prototype.hasOwnProperty.call(file, t.term)) { w.push({ w: 1, p: postings(file[t.term]) }); }
        if (t.prefix && key.slice(-1) !== '$') {
          Object.keys(file).filter(function (k) {
            return k.length > t.term.length && k.lastIndexOf(t.term, 0) === 0;
          }).sort(function (a, b) {
            return (file[b].length - file[a].length) || (a < b ? -1 : a > b ? 1 : 0);
          }).slice(0, meta.px).forEach(function (k) { w.push({ w: meta.pw, p: postings(file[k]) }); });
        }
        return w;
      });
    })).then(function (words) {
      if (words.some(function (w) { return w.length === 0; })) { return show(meta, q, page, terms, []); }
      var has = candidates(words, tagSets);
      var range = Math.max(meta.range, 1);
      var ks = Array.from(new Set(has.map(function (id) { return Math.floor(id / range); })));
      return Promise.all(ks.map(function (k) { return load('n-' + k); })).then(function (all) {
        var figures = new Map();
        all.forEach(function (flat, i) {
          var id = ks[i] * range;
          for (var j = 0; flat && j + 2 < flat.length; j += 3) {
            id += flat[j];
            figures.set(id, [flat[j + 1], flat[j + 2]]);
          }
        });
        return show(meta, q, page, terms, rank(meta, words, tagSets, figures));
      });
    });
  }
  function show(meta, q, page, terms, ranked) {
    var per = Math.max(meta.page, 1);
    var pages = Math.max(1, Math.ceil(ranked.length / per));
    page = Math.min(Math.max(page, 1), pages);
    header(ranked.length, q);
    var shown = ranked.slice((page - 1) * per, page * per).map(function (r) { return r[0]; });
    return Promise.all(shown.map(function (id) { return load('x-' + id); })).then(function (recs) {
      recs.forEach(function (rec, i) {
        if (rec) { list.appendChild(item(shown[i], rec, terms, meta)); }
      });
      if (pages > 1) {
        if (page > 1) { pager.appendChild(link(text('prev'), q, page - 1, 'prev')); }
        var where = document.createElement('span');
        where.textContent = fill(text('page'), { p: page, n: pages });
        pager.appendChild(where);
        if (page < pages) { pager.appendChild(link(text('next'), q, page + 1, 'next')); }
      }
      finish(ranked.length, shown, page);
    });
  }
  var params = new URLSearchParams(window.location.search);
  var q = params.get('q') || '';
  // A tag page's search form sends its tag apart: search within it.
  var tagParam = params.get('tag') || '';
  if (tagParam !== '' && queryTags(q).indexOf(fold(tagParam)) < 0) { q = ('#' + tagParam + ' ' + q).trim(); }
  var page = parseInt(params.get('p') || '1', 10);
  var input = document.getElementById('q');
  if (input) { input.value = q; }
  run(q, isNaN(page) ? 1 : page);
})();
