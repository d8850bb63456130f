// vraagbaak archive search: a static index, read in the browser without a server.
// The index is split in small script files (search/t-XX.js for terms starting with XX,
// search/d-N.js for the titles of messages), loaded with <script> elements so that search
// also works when the archive is opened from disk. Terms are folded the same way as in
// src/archive/search.rs: NFKD, combining marks removed, lower case.
(function () {
  'use strict';
  var app = document.getElementById('search-app');
  if (!app) { return; }
  var root = app.getAttribute('data-root') || '';
  var status = document.getElementById('search-status');
  var list = document.getElementById('search-results');
  var VB = window.VB = window.VB || {};
  var terms = {}, docs = {}, waiting = {};
  VB.t = function (shard, data) { terms[shard] = data; };
  VB.d = function (n, data) { docs[n] = data; };

  function load(url, store, key) {
    if (store[key] !== undefined) { return Promise.resolve(store[key]); }
    if (waiting[url]) { return waiting[url]; }
    waiting[url] = new Promise(function (resolve) {
      var s = document.createElement('script');
      s.src = url;
      s.onload = function () { if (store[key] === undefined) { store[key] = {}; } resolve(store[key]); };
      s.onerror = function () { store[key] = {}; resolve(store[key]); };
      document.head.appendChild(s);
    });
    return waiting[url];
  }
  function fold(s) { return s.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase(); }
  function tokens(s) { return (fold(s).match(/[\p{L}\p{N}]+/gu) || []).filter(function (t) { return Array.from(t).length >= 2; }); }
  function shard(t) {
    return Array.from(t).slice(0, 2).map(function (c) {
      return /[a-z0-9]/.test(c) ? c : 'u' + c.codePointAt(0).toString(16);
    }).join('');
  }
  function postings(term, prefix) {
    var sh = shard(term);
    return load(root + 'search/t-' + sh + '.js', terms, sh).then(function (idx) {
      var out = new Set();
      if (!prefix) {
        (idx[term] || []).forEach(function (n) { out.add(n); });
      } else {
        var seen = 0;
        Object.keys(idx).forEach(function (k) {
          if (seen < 500 && k.lastIndexOf(term, 0) === 0) { seen++; idx[k].forEach(function (n) { out.add(n); }); }
        });
      }
      return out;
    });
  }
  function say(text) { status.textContent = text; }
  function show(seqs) {
    list.textContent = '';
    var top = seqs.slice(0, 100);
    var shards = Array.from(new Set(top.map(function (n) { return Math.floor(n / 500); })));
    return Promise.all(shards.map(function (s) { return load(root + 'search/d-' + s + '.js', docs, s); })).then(function () {
      top.forEach(function (n) {
        var d = (docs[Math.floor(n / 500)] || {})[n];
        if (!d) { return; }
        var li = document.createElement('li');
        var a = document.createElement('a');
        a.href = root + d[0];
        a.textContent = d[1] || '—';
        var meta = document.createElement('span');
        meta.className = 'meta';
        meta.textContent = (d[2] || app.getAttribute('data-anonymous')) + ' · ' + d[3];
        li.appendChild(a);
        li.appendChild(meta);
        list.appendChild(li);
      });
    });
  }
  function run(q) {
    var ts = tokens(q);
    if (ts.length === 0) { say(''); return; }
    Promise.all(ts.map(function (t, i) { return postings(t, i === ts.length - 1); })).then(function (sets) {
      var hits = Array.from(sets[0]).filter(function (n) { return sets.every(function (s) { return s.has(n); }); });
      hits.sort(function (a, b) { return b - a; });
      say(hits.length === 0 ? app.getAttribute('data-none') : hits.length + ' ' + app.getAttribute('data-count'));
      return show(hits);
    });
  }
  var q = new URLSearchParams(window.location.search).get('q') || '';
  var input = document.getElementById('q');
  if (input) { input.value = q; }
  run(q);
})();
