// Sandbox chat page: the user side of the emulated Telegram. Talks only to the emulator's
// control API (see src/emulator/mod.rs) and re-reads the transcript every 700 ms.
(() => {
  'use strict';

  const POLL_MS = 700;
  const ACTION_SHOWN_MS = 5000;
  const body = document.body;
  const USER_ID = Number(body.dataset.userId);
  const FIRST_NAME = body.dataset.firstName || 'Sandbox';
  const $ = (id) => document.getElementById(id);
  const chat = $('chat');
  const input = $('input');
  const form = $('composer');
  const lang = $('lang');
  const toast = $('toast');
  const errorBox = $('error');
  const presence = $('presence');
  const commandsBox = $('commands');
  const replyKb = $('replykb');
  const presenceIdle = presence.textContent;

  const rendered = new Map(); // message_id -> { el, sig }
  let commands = [];
  let toastTimer = 0;
  let polling = false;

  lang.value = localStorage.getItem('sandbox.lang') || 'en';
  lang.addEventListener('change', () => localStorage.setItem('sandbox.lang', lang.value));

  function user() {
    return { id: USER_ID, first_name: FIRST_NAME, username: 'sandbox_user', language_code: lang.value };
  }

  async function getJson(url) {
    const r = await fetch(url, { cache: 'no-store' });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  async function push(action) {
    const r = await fetch('/emulator/control/updates', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(Object.assign({ user: user() }, action)),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
    showError('');
    setTimeout(poll, 150);
    return j.update_id;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function showToast(text, alert) {
    if (alert) {
      window.alert(text);
      return;
    }
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, 2500);
  }

  // ---- rendering -------------------------------------------------------------------------

  const TAGS = {
    bold: 'b', italic: 'i', underline: 'u', strikethrough: 's', code: 'code', pre: 'pre',
  };

  // Text with MessageEntity objects (UTF-16 offsets, which JS strings use natively).
  function richText(text, entities) {
    const frag = document.createDocumentFragment();
    const list = (entities || []).filter((e) => e.length > 0);
    const cuts = new Set([0, text.length]);
    list.forEach((e) => { cuts.add(e.offset); cuts.add(Math.min(text.length, e.offset + e.length)); });
    const points = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i + 1 < points.length; i++) {
      const [from, to] = [points[i], points[i + 1]];
      if (from >= to) continue;
      const active = list
        .filter((e) => e.offset <= from && e.offset + e.length >= to)
        .sort((a, b) => b.length - a.length);
      let node = document.createTextNode(text.slice(from, to));
      for (let k = active.length - 1; k >= 0; k--) node = wrap(node, active[k], text);
      frag.appendChild(node);
    }
    return frag;
  }

  // Links the bot sends become clickable only for http(s) and tg: URLs; anything else
  // (javascript:, data:, file:) stays plain text.
  function safeHref(url) {
    try {
      const u = new URL(url);
      return ['http:', 'https:', 'tg:'].includes(u.protocol) ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  function wrap(child, e, text) {
    let el;
    let href = null;
    if (e.type === 'text_link') {
      href = safeHref(e.url);
    } else if (e.type === 'url') {
      // Telegram links a bare "example.org" as http.
      const shown = text.substr(e.offset, e.length);
      href = safeHref(/^[a-z][a-z0-9+.-]*:/i.test(shown) ? shown : `http://${shown}`);
    }
    if (TAGS[e.type]) {
      el = document.createElement(TAGS[e.type]);
    } else if (href) {
      el = document.createElement('a');
      el.href = href;
      el.target = '_blank';
      el.rel = 'noopener noreferrer';
    } else if (e.type === 'spoiler') {
      el = document.createElement('span');
      el.className = 'spoiler';
      el.addEventListener('click', () => el.classList.toggle('shown'));
    } else if (e.type === 'blockquote' || e.type === 'expandable_blockquote') {
      el = document.createElement('span');
      el.className = 'quote';
    } else if (e.type === 'bot_command') {
      el = document.createElement('span');
      el.className = 'cmdlink';
      const cmd = text.substr(e.offset, e.length);
      el.addEventListener('click', () => sendText(cmd));
    } else {
      el = document.createElement('span');
    }
    el.appendChild(child);
    return el;
  }

  function humanSize(n) {
    if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MB`;
    if (n >= 1024) return `${Math.round(n / 1024)} KB`;
    return `${n} B`;
  }

  function renderMessage(m) {
    const el = document.createElement('div');
    el.className = `msg ${m.from_bot ? 'bot' : 'user'}`;
    el.dataset.id = m.message_id;
    if (m.photo) {
      const img = document.createElement('img');
      img.className = 'photo';
      img.src = m.photo.url;
      img.alt = `photo ${m.photo.width}×${m.photo.height}`;
      img.addEventListener('click', () => img.classList.toggle('full'));
      img.addEventListener('load', () => scrollDown(false));
      el.appendChild(img);
    }
    // A video plays with controls; an animation loops like in Telegram: a GIF or WebP as a
    // picture, an MP4 animation as a muted, looping video.
    const clip = m.video || m.animation;
    if (clip) {
      const still = m.animation && /^image\//.test(clip.mime_type);
      const v = document.createElement(still ? 'img' : 'video');
      v.className = 'photo clip';
      v.src = clip.url;
      if (still) {
        v.alt = `animation ${clip.width}×${clip.height}`;
      } else if (m.animation) {
        Object.assign(v, { autoplay: true, loop: true, muted: true, playsInline: true });
      } else {
        v.controls = true;
        v.preload = 'metadata';
      }
      v.addEventListener(still ? 'load' : 'loadedmetadata', () => scrollDown(false));
      el.appendChild(v);
      const small = document.createElement('small');
      small.className = 'clipinfo';
      small.textContent = `${m.video ? 'video' : 'animation'} · ${clip.width}×${clip.height} · ${clip.duration} s · ${humanSize(clip.size)}`;
      el.appendChild(small);
    }
    if (m.document) {
      const a = document.createElement('a');
      a.className = 'doc';
      a.href = m.document.url;
      a.download = m.document.file_name || 'file';
      const name = m.document.file_name || 'file';
      const ext = name.includes('.') ? name.split('.').pop().slice(0, 4) : 'file';
      a.appendChild(span(ext, 'ext'));
      a.appendChild(document.createTextNode(`${name} `));
      const small = document.createElement('small');
      small.textContent = `${humanSize(m.document.size)} · ${m.document.mime_type}`;
      a.appendChild(small);
      el.appendChild(a);
    }
    if (m.invoice) el.appendChild(renderInvoice(m.invoice, m.message_id));
    const paid = m.successful_payment || m.refunded_payment;
    if (paid) {
      const p = document.createElement('div');
      p.className = 'text payment';
      const verb = m.successful_payment ? 'Paid' : 'Refunded';
      p.textContent = `${verb} ${starsOr(paid)} · ${paid.telegram_payment_charge_id}`;
      el.appendChild(p);
    }
    const text = m.text ?? m.caption;
    if (text) {
      const t = document.createElement('div');
      t.className = 'text';
      t.appendChild(richText(text, m.entities));
      el.appendChild(t);
    }
    const meta = document.createElement('div');
    meta.className = 'meta';
    if (m.edit_count > 0) meta.appendChild(span('edited', 'edited'));
    if (m.sent_by_file_id) meta.appendChild(span('by file_id', 'fid'));
    const d = new Date(m.date * 1000);
    meta.appendChild(span(d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }), 'time'));
    el.appendChild(meta);
    const rows = m.reply_markup && m.reply_markup.inline_keyboard;
    if (rows) el.appendChild(inlineKeyboard(rows, m.message_id));
    return el;
  }

  function starsOr(x) {
    return x.currency === 'XTR' ? `⭐${x.total_amount}` : `${x.total_amount} ${x.currency}`;
  }

  // An invoice card with the payer's "Pay ⭐N" button: the emulator sends the bot a
  // pre_checkout_query and, when the bot accepts within 10 s, the successful_payment.
  function renderInvoice(inv, messageId) {
    const box = document.createElement('div');
    box.className = 'invoice';
    const title = document.createElement('strong');
    title.textContent = inv.title;
    box.appendChild(title);
    const desc = document.createElement('div');
    desc.textContent = inv.description;
    box.appendChild(desc);
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'pay';
    btn.textContent = `Pay ${starsOr(inv)}`;
    btn.addEventListener('click', () => pay(btn, { message_id: messageId }));
    box.appendChild(btn);
    return box;
  }

  // `target`: {message_id} of an invoice message, or {invoice_link} of a createInvoiceLink
  // link (subscriptions); the control API pays either the same way.
  async function pay(btn, target) {
    btn.classList.add('pending');
    btn.disabled = true;
    try {
      const r = await fetch('/emulator/control/updates', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: user(), pay: target }),
      });
      const j = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
      if (j.paid) {
        showToast('Payment sent', false);
      } else {
        const why = j.reason === 'timeout' ? 'the bot did not confirm within 10 s' : (j.error_message || 'declined');
        showToast(`Payment failed: ${why}`, true);
      }
      setTimeout(poll, 150);
    } catch (e) {
      showError(`Payment failed: ${e.message}`);
    } finally {
      btn.classList.remove('pending');
      btn.disabled = false;
    }
  }

  function span(text, cls) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function inlineKeyboard(rows, messageId) {
    const box = document.createElement('div');
    box.className = 'kb-rows';
    rows.forEach((row) => {
      const r = document.createElement('div');
      r.className = 'kb-row';
      row.forEach((b) => r.appendChild(inlineButton(b, messageId)));
      box.appendChild(r);
    });
    return box;
  }

  function inlineButton(b, messageId) {
    // An invoice link the emulator made (`https://t.me/$…`): Telegram opens the payment form
    // on a tap; here the tap pays it.
    if (b.url && b.url.startsWith('https://t.me/$')) {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'kb pay';
      btn.textContent = b.text;
      btn.addEventListener('click', () => pay(btn, { invoice_link: b.url }));
      return btn;
    }
    if (b.url && safeHref(b.url)) {
      const a = document.createElement('a');
      a.className = 'kb';
      a.href = safeHref(b.url);
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.textContent = `${b.text} ↗`;
      return a;
    }
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'kb';
    btn.textContent = b.text;
    if (b.callback_data !== undefined) {
      btn.dataset.callback = b.callback_data;
      btn.addEventListener('click', () => press(btn, b.callback_data, messageId));
    } else if (b.copy_text) {
      btn.addEventListener('click', () => navigator.clipboard?.writeText(b.copy_text.text));
    } else {
      btn.disabled = true;
      btn.title = 'not available in the sandbox';
    }
    return btn;
  }

  async function press(btn, data, messageId) {
    btn.classList.add('pending');
    try {
      const updateId = await push({ callback_data: data, message_id: messageId });
      awaitAnswer(`cq${updateId}`, btn);
    } catch (e) {
      btn.classList.remove('pending');
      showError(`Button press failed: ${e.message}`);
    }
  }

  // The spinner stays until the bot answers the callback query, as in Telegram clients.
  async function awaitAnswer(queryId, btn, tries = 0) {
    try {
      const answers = await getJson('/emulator/control/callback_answers');
      const a = answers.find((x) => x.callback_query_id === queryId);
      if (a) {
        btn.classList.remove('pending');
        if (a.text) showToast(a.text, a.show_alert);
        if (a.url) window.open(a.url, '_blank', 'noopener');
        return;
      }
    } catch (e) { /* the next poll shows connectivity errors */ }
    if (tries < 40) setTimeout(() => awaitAnswer(queryId, btn, tries + 1), 250);
    else btn.classList.remove('pending');
  }

  function nearBottom() {
    return chat.scrollHeight - chat.scrollTop - chat.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || nearBottom()) chat.scrollTop = chat.scrollHeight;
  }

  function render(messages) {
    const stick = nearBottom();
    let added = false;
    const seen = new Set();
    let prev = null;
    messages.forEach((m) => {
      seen.add(m.message_id);
      const sig = JSON.stringify(m);
      let entry = rendered.get(m.message_id);
      if (!entry || entry.sig !== sig) {
        const el = renderMessage(m);
        if (entry) entry.el.replaceWith(el);
        else added = true;
        entry = { el, sig };
        rendered.set(m.message_id, entry);
      }
      const want = prev ? prev.nextSibling : $('empty').nextSibling;
      if (entry.el !== want) chat.insertBefore(entry.el, want);
      prev = entry.el;
    });
    for (const [id, entry] of rendered) {
      if (!seen.has(id)) {
        entry.el.remove();
        rendered.delete(id);
      }
    }
    $('empty').hidden = messages.length > 0;
    renderReplyKeyboard(messages);
    if (added) scrollDown(stick);
  }

  // The latest bot reply keyboard stays until removed or replaced, as in Telegram.
  function renderReplyKeyboard(messages) {
    let kb = null;
    messages.forEach((m) => {
      const mk = m.from_bot && m.reply_markup;
      if (!mk) return;
      if (mk.keyboard) kb = mk;
      if (mk.remove_keyboard) kb = null;
    });
    const sig = kb ? JSON.stringify(kb) : '';
    if (replyKb.dataset.sig === sig) return;
    replyKb.dataset.sig = sig;
    replyKb.textContent = '';
    replyKb.hidden = !kb;
    if (!kb) return;
    kb.keyboard.forEach((row) => row.forEach((b) => {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.textContent = typeof b === 'string' ? b : b.text;
      btn.addEventListener('click', () => {
        sendText(btn.textContent);
        if (kb.one_time_keyboard) replyKb.hidden = true;
      });
      replyKb.appendChild(btn);
    }));
  }

  const ACTIONS = {
    typing: 'typing…',
    upload_photo: 'sending a photo…',
    upload_document: 'sending a file…',
    upload_video: 'sending a video…',
    record_video: 'recording a video…',
  };

  function renderStatus(st) {
    commands = st.commands || [];
    const fresh = st.last_action && Date.now() - st.last_action_at_ms < ACTION_SHOWN_MS;
    presence.textContent = fresh ? `bot is ${ACTIONS[st.last_action] || `${st.last_action}…`}` : presenceIdle;
    presence.classList.toggle('active', Boolean(fresh));
    if (st.blocked) presence.textContent = 'you blocked the bot';
  }

  // ---- polling and input -----------------------------------------------------------------

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const [messages, status] = await Promise.all([
        getJson(`/emulator/control/chats/${USER_ID}/messages`),
        getJson(`/emulator/control/chats/${USER_ID}`),
      ]);
      render(messages);
      renderStatus(status);
      if (errorBox.dataset.kind === 'poll') showError('');
    } catch (e) {
      showError(`Emulator unreachable: ${e.message}`);
      errorBox.dataset.kind = 'poll';
    } finally {
      polling = false;
    }
  }

  async function sendText(text) {
    const t = text.trim();
    if (!t) return;
    try {
      await push({ text: t });
    } catch (e) {
      showError(`Send failed: ${e.message}`);
    }
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value;
    input.value = '';
    commandsBox.hidden = true;
    sendText(text);
    input.focus();
  });

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(r.error);
      r.readAsDataURL(file);
    });
  }

  // Telegram clients send at most 10 files as one album and split a larger pick into several.
  const ALBUM_MAX = 10;

  // Like Telegram's (a long decimal string), unique enough for one page's albums.
  function newMediaGroupId() {
    const rnd = new Uint32Array(1);
    crypto.getRandomValues(rnd);
    return `${Date.now()}${String(rnd[0] % 1000000).padStart(6, '0')}`;
  }

  // One file is one message; several are albums: one update per file, in the order chosen,
  // sharing a media_group_id, with the caption on the first (as Telegram clients send them).
  async function sendFiles(el, kind) {
    const files = Array.from(el.files || []);
    el.value = '';
    if (!files.length) return;
    const caption = input.value.trim();
    input.value = '';
    try {
      const data = await Promise.all(files.map(readAsDataUrl));
      for (let start = 0; start < files.length; start += ALBUM_MAX) {
        const group = files.length - start > 1 ? newMediaGroupId() : null;
        for (let i = start; i < Math.min(start + ALBUM_MAX, files.length); i++) {
          const action = kind === 'photo'
            ? { photo_base64: data[i] }
            : { document_base64: data[i], file_name: files[i].name };
          if (caption && i === 0) action.caption = caption;
          if (group) action.media_group_id = group;
          // Sequential, so the bot sees the album's messages in the order chosen.
          await push(action);
        }
      }
    } catch (e) {
      showError(`Upload failed: ${e.message}`);
    }
  }

  $('photo').addEventListener('change', (ev) => sendFiles(ev.target, 'photo'));
  $('document').addEventListener('change', (ev) => sendFiles(ev.target, 'document'));

  $('menu').addEventListener('click', () => {
    commandsBox.textContent = '';
    if (!commands.length) {
      commandsBox.appendChild(span('The bot has not set any commands.', 'none'));
    }
    commands.forEach((c) => {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.textContent = `/${c.command}`;
      btn.appendChild(span(c.description, 'desc'));
      btn.addEventListener('click', () => {
        commandsBox.hidden = true;
        sendText(`/${c.command}`);
      });
      commandsBox.appendChild(btn);
    });
    commandsBox.hidden = !commandsBox.hidden;
  });

  document.querySelectorAll('.cmd-suggest').forEach((b) => {
    b.addEventListener('click', () => sendText(b.dataset.text));
  });

  poll();
  setInterval(poll, POLL_MS);
})();
