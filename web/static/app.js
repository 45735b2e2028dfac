// topix web: refresh the figures every few seconds from the page's JSON
// (the schema of `topix stats --json`), without reloading the page. The
// page works without it: every link and form is plain HTML.
"use strict";
(function () {
  const box = document.getElementById("refresh");
  if (!box || !window.fetch) return;
  const api = box.dataset.api;
  const every = 5000;
  const age = (s) => {
    if (!(s > 0)) return "-";
    if (s < 1) return Math.round(s * 1000) + "ms";
    if (s < 60) return (Math.round(s * 10) / 10) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + Math.round(s % 60) + "s";
    return Math.floor(s / 3600) + "h" + Math.round((s % 3600) / 60) + "m";
  };
  const rate = (r) => r === 0 ? "0" : r < 1 ? r.toFixed(2) : r < 100 ? r.toFixed(1) : r.toFixed(0);
  const set = (el, text) => { if (el && el.textContent !== text) el.textContent = text; };
  function render(rep) {
    let o = { rate: 0, error_rate: 0, lag: 0, pending: 0, stuck: 0, dead_letters: 0, alive: 0, consumers: 0, lag_age: 0, in_flight: 0 };
    for (const g of rep.groups) {
      o.rate += g.rate; o.error_rate += g.error_rate; o.lag += g.lag; o.pending += g.pending; o.stuck += g.stuck;
      o.dead_letters += g.dead_letters; o.alive += g.alive; o.consumers += g.consumers; o.lag_age = Math.max(o.lag_age, g.lag_age);
      for (const row of document.querySelectorAll("tr[data-group]")) {
        if (row.dataset.group !== g.stream + " " + g.group) continue;
        const f = (k) => row.querySelector('[data-f="' + k + '"]');
        set(f("state"), g.state); if (f("state")) f("state").className = "state " + g.state;
        set(f("consumers"), g.alive + "/" + g.consumers);
        set(f("lag"), (g.lag_exact ? "" : "~") + g.lag);
        set(f("lag_age"), age(g.lag_age));
        set(f("pending"), String(g.pending));
        set(f("oldest_pending"), age(g.oldest_pending));
        set(f("stuck"), g.stuck + (g.stuck_capped ? "+" : ""));
        set(f("dead_letters"), String(g.dead_letters));
        set(f("rate"), rate(g.rate));
        set(f("error_rate"), rate(g.error_rate));
        set(f("length"), String(g.length));
      }
    }
    for (const c of rep.consumers || []) o.in_flight += c.busy;
    const q = (k) => document.querySelector('[data-o="' + k + '"]');
    set(q("rate"), rate(o.rate)); set(q("error_rate"), rate(o.error_rate)); set(q("lag"), String(o.lag));
    set(q("lag_age"), age(o.lag_age)); set(q("pending"), String(o.pending)); set(q("stuck"), String(o.stuck));
    set(q("dead_letters"), String(o.dead_letters)); set(q("consumers"), o.alive + "/" + o.consumers);
    if (rep.consumers) set(q("in_flight"), String(o.in_flight));
    set(document.querySelector('[data-k="time"]'), new Date(rep.time).toISOString().slice(11, 19) + " UTC");
    document.body.dataset.refreshed = rep.time;
  }
  async function tick() {
    try {
      const r = await fetch(api, { credentials: "same-origin", cache: "no-store" });
      if (r.ok) render(await r.json());
    } catch (e) { /* the next tick tries again */ }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
})();
