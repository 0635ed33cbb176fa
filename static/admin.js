// mediabot admin panel. Loaded from our own origin (the CSP allows no inline script).
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  // Jobs page: refresh the table body in place. The server renders the rows (escaped), so
  // this only swaps trusted markup from our own origin.
  const rows = document.getElementById('job-rows');
  if (rows && rows.dataset.refresh) {
    setInterval(async () => {
      try {
        const r = await fetch(rows.dataset.refresh, { credentials: 'same-origin' });
        if (r.ok) rows.innerHTML = await r.text();
      } catch (e) { /* offline for a moment: try again on the next tick */ }
    }, 5000);
  }
  // Forms that need a second thought (ban).
  for (const f of document.querySelectorAll('form.confirm')) {
    f.addEventListener('submit', (ev) => {
      if (!window.confirm(f.dataset.confirm || 'Sure?')) ev.preventDefault();
    });
  }
});
