// Demo client for the Q&A service (see docs/protocol.md). Plain browser
// JavaScript; the only dependency is the Socket.IO client served at
// /static/socket.io.min.js.
(function () {
  'use strict';

  var TOKEN_KEY = 'qa.resume_token';
  var $ = function (id) { return document.getElementById(id); };

  // ---------------------------------------------------------- helpers

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') e.textContent = attrs[k];
        else if (k === 'class') e.className = attrs[k];
        else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), attrs[k]);
        else e.setAttribute(k, attrs[k]);
      });
    }
    (children || []).forEach(function (c) {
      if (c != null) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return e;
  }

  function fmtTime(s) {
    if (!s) return '';
    var d = new Date(s);
    return isNaN(d) ? String(s) : d.toLocaleTimeString();
  }

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }
  function storeToken(t) {
    try {
      if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: sessions just do not survive reloads */ }
  }

  function log(dir, name, data) {
    var list = $('log');
    var text = dir + ' ' + name + (data === undefined ? '' : ' ' + JSON.stringify(data));
    if (text.length > 400) text = text.slice(0, 400) + '…';
    list.appendChild(el('li', { text: text }));
    while (list.children.length > 200) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  // showError puts a docs/protocol.md error ({code, message, retry_after_ms?})
  // on screen with its code first.
  function showError(where, err) {
    err = err || {};
    var code = err.code || 'error';
    var msg = err.message || '';
    if (typeof err.retry_after_ms === 'number') {
      msg += (msg ? ' — ' : '') + 'retry in ' + Math.ceil(err.retry_after_ms / 1000) + ' s';
    }
    var box = el('div', { class: 'error', role: 'alert' }, [
      el('span', { class: 'code', text: code }),
      el('span', { text: where + (msg ? ': ' + msg : '') }),
    ]);
    box.appendChild(el('button', { class: 'dismiss', type: 'button', title: 'Dismiss', text: '×',
      onclick: function () { box.remove(); } }));
    var list = $('errors');
    list.insertBefore(box, list.firstChild);
    while (list.children.length > 5) list.removeChild(list.lastChild);
    setTimeout(function () { box.remove(); }, 15000);
  }

  // ---------------------------------------------------------- connection

  var socket = io({
    // A function, so every (re)connection sends the latest resume token.
    auth: function (cb) {
      var t = storedToken();
      cb(t ? { resume: t } : {});
    },
  });
  var joinedRooms = new Set();

  function setState(text, cls) {
    var s = $('state');
    s.textContent = text;
    s.className = 'state state-' + cls;
  }

  // request sends one request with an acknowledgement and resolves with
  // the reply object; failures are shown and resolve to null.
  function request(event, payload, quietCodes) {
    log('→', event, payload);
    return socket.timeout(10000).emitWithAck(event, payload).then(function (reply) {
      log('←', event + ' ack', reply);
      if (reply && reply.ok) return reply;
      var err = (reply && reply.error) || { code: 'internal', message: 'malformed reply' };
      if (!quietCodes || quietCodes.indexOf(err.code) < 0) showError(event, err);
      return null;
    }, function () {
      showError(event, { code: 'timeout', message: 'no reply from the server' });
      return null;
    });
  }

  socket.on('connect', function () { setState('connected', 'connected'); });
  socket.on('disconnect', function (reason) {
    setState('disconnected (' + reason + ')', 'disconnected');
    joinedRooms.clear();
    renderRooms();
  });
  socket.io.on('reconnect_attempt', function () { setState('reconnecting…', 'connecting'); });
  socket.on('connect_error', function (err) {
    // Refusals by the server carry a code: err.message is the code and
    // err.data = {code, message, retry_after_ms?}.
    if (err && err.data && err.data.code) {
      setState('refused: ' + err.data.code, 'refused');
      showError('connect', err.data);
    } else {
      setState('cannot connect (' + (err && err.message) + ')', 'disconnected');
    }
  });

  socket.on('connected', function (p) {
    log('←', 'connected', p);
    storeToken(p.resume_token);
    $('session').textContent = p.session_id || '–';
    $('resumed').hidden = !p.resumed;
    var l = p.limits || {};
    $('limits').textContent = (p.user_id ? 'user ' + p.user_id + ' · ' : '') +
      'limits: ' + l.max_questions_per_minute + ' questions/min, ' +
      l.max_question_length + ' characters per question';
    if (p.resumed) refreshOpenTasks();
    loadHistory(false);
  });

  socket.on('error', function (e) {
    log('←', 'error', e);
    showError(e && e.event ? e.event : 'server', e);
  });

  $('new-session').addEventListener('click', function () {
    storeToken('');
    tasks.clear();
    $('tasks').textContent = '';
    $('tasks').appendChild(el('p', { class: 'muted empty', text: 'No questions yet.' }));
    socket.disconnect();
    setState('connecting…', 'connecting');
    socket.connect();
  });

  // ---------------------------------------------------------- tasks

  var tasks = new Map(); // task_id -> {card parts, chunks}

  function statusClass(s) { return 'status status-' + s; }

  function taskView(id, question, room) {
    var t = tasks.get(id);
    if (t) return t;
    var empty = $('tasks').querySelector('.empty');
    if (empty) empty.remove();
    t = { id: id, chunks: [], final: false };
    t.status = el('span', { class: statusClass('pending'), text: 'pending' });
    t.q = el('span', { class: 'q', text: question || '(question in room ' + room + ')' });
    t.cancel = el('button', { type: 'button', text: 'Cancel', onclick: function () { cancelTask(id); } });
    t.answer = el('div', { class: 'answer' });
    t.sources = el('div', { class: 'sources' });
    t.meta = el('div', { class: 'meta', text: (room ? 'room ' + room + ' · ' : '') + 'task ' + id });
    t.card = el('article', { class: 'task' }, [
      el('div', { class: 'head' }, [t.q, t.status, t.cancel]), t.answer, t.sources, t.meta,
    ]);
    $('tasks').insertBefore(t.card, $('tasks').firstChild);
    tasks.set(id, t);
    return t;
  }

  function setStatus(t, status) {
    t.status.textContent = status;
    t.status.className = statusClass(status);
    var done = status === 'completed' || status === 'failed' || status === 'cancelled';
    t.cancel.hidden = done;
    if (done) t.answer.classList.remove('streaming');
  }

  function showAnswer(t, a) {
    t.final = true;
    t.answer.classList.remove('streaming');
    t.answer.textContent = a.answer || '';
    if (a.question) t.q.textContent = a.question;
    t.sources.textContent = a.sources && a.sources.length ? 'sources: ' + a.sources.join(', ') : '';
    if (a.duration_ms != null) {
      t.meta.textContent = t.meta.textContent.split(' · answered')[0] +
        ' · answered ' + fmtTime(a.answered_at) + ' in ' + a.duration_ms + ' ms';
    }
  }

  socket.on('task_status', function (p) {
    log('←', 'task_status', p);
    setStatus(taskView(p.task_id, null, null), p.status);
  });

  socket.on('answer_chunk', function (p) {
    var t = taskView(p.task_id, null, null);
    if (t.final || t.chunks[p.seq] !== undefined) return;
    t.chunks[p.seq] = p.delta;
    t.answer.classList.add('streaming');
    t.answer.textContent = t.chunks.join('');
  });

  socket.on('answer', function (p) {
    log('←', 'answer', p);
    var t = taskView(p.task_id, p.question, null);
    setStatus(t, 'completed');
    showAnswer(t, p);
    loadHistory(false);
  });

  socket.on('answer_error', function (p) {
    log('←', 'answer_error', p);
    var t = taskView(p.task_id, null, null);
    t.answer.classList.remove('streaming');
    t.sources.textContent = '';
    t.sources.appendChild(el('span', { class: 'code', text: p.code }));
    t.sources.appendChild(document.createTextNode(' ' + (p.message || '')));
    loadHistory(false);
  });

  function cancelTask(id) {
    request('cancel_task', { task_id: id }).then(function (r) {
      if (r) setStatus(taskView(id), r.status);
    });
  }

  // After resuming, answers that finished while away come from get_task.
  function refreshOpenTasks() {
    tasks.forEach(function (t, id) {
      if (t.status.textContent === 'completed' || t.status.textContent === 'failed' ||
          t.status.textContent === 'cancelled') return;
      request('get_task', { task_id: id }, ['not_found']).then(function (r) {
        if (!r) return;
        setStatus(t, r.task.status);
        if (r.task.status === 'completed') showAnswer(t, r.task);
        else if (r.task.error) t.sources.textContent = r.task.error.code + ' ' + r.task.error.message;
      });
    });
  }

  $('ask-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var question = $('question').value;
    var payload = { question: question, stream: $('stream').checked };
    var room = $('ask-room').value.trim();
    if (room) payload.room = room;
    request('ask_question', payload).then(function (r) {
      if (!r) return;
      var t = taskView(r.task_id, question.trim(), room);
      setStatus(t, r.status);
      $('question').value = '';
      $('suggestions').textContent = '';
    });
  });

  // ---------------------------------------------------------- suggestions

  var suggestTimer = null;
  var suggestSeq = 0;
  $('question').addEventListener('input', function () {
    clearTimeout(suggestTimer);
    suggestTimer = setTimeout(suggest, 250);
  });
  $('question').addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      $('ask-form').requestSubmit();
    }
  });

  function suggest() {
    var q = $('question').value.trim();
    var list = $('suggestions');
    var mine = ++suggestSeq;
    if (!q || q.length > 200 || !socket.connected) { list.textContent = ''; return; }
    // Typing is not an error: invalid_payload (a query out of range) and
    // rate_limited stay quiet here.
    request('get_suggestions', { query: q, limit: 5 }, ['invalid_payload', 'rate_limited']).then(function (r) {
      if (mine !== suggestSeq) return; // an older reply
      list.textContent = '';
      if (!r) return;
      r.suggestions.forEach(function (s) {
        list.appendChild(el('li', null, [el('button', { type: 'button', text: s, onclick: function () {
          $('question').value = s;
          list.textContent = '';
          $('question').focus();
        } })]));
      });
    });
  }

  // ---------------------------------------------------------- rooms

  function renderRooms() {
    var ul = $('rooms');
    ul.textContent = '';
    joinedRooms.forEach(function (r) { ul.appendChild(el('li', { text: r })); });
    if (!joinedRooms.size) ul.appendChild(el('li', { class: 'muted', text: 'in no room' }));
  }
  renderRooms();

  $('room-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var room = $('room').value.trim();
    request('join_room', { room: room }).then(function (r) {
      if (!r) return;
      joinedRooms.add(r.room);
      renderRooms();
      var n = Array.isArray(r.members) ? r.members.length : r.members;
      log('·', 'room ' + r.room + ' has ' + n + ' member(s)');
      if (!$('ask-room').value) $('ask-room').value = r.room;
    });
  });
  $('leave').addEventListener('click', function () {
    var room = $('room').value.trim();
    request('leave_room', { room: room }).then(function (r) {
      if (!r) return;
      joinedRooms.delete(r.room);
      renderRooms();
      if ($('ask-room').value === r.room) $('ask-room').value = '';
    });
  });

  // ---------------------------------------------------------- history

  var oldest = null; // task_id of the last item shown, for paging

  function historyItem(it) {
    var head = el('div', null, [
      el('span', { class: statusClass(it.status), text: it.status }), ' ',
      el('strong', { text: it.question }), ' ',
      el('span', { class: 'muted', text: fmtTime(it.asked_at) + (it.room ? ' · room ' + it.room : '') }),
    ]);
    var body = it.answer ? el('div', { class: 'a', text: it.answer })
      : it.error ? el('div', { class: 'a' }, [el('span', { class: 'code', text: it.error.code }), ' ' + it.error.message])
        : null;
    return el('li', null, [head, body]);
  }

  function loadHistory(more) {
    var payload = { limit: 10 };
    if (more && oldest) payload.before = oldest;
    return request('get_history', payload).then(function (r) {
      if (!r) return;
      var ol = $('history');
      if (!more) ol.textContent = '';
      r.items.forEach(function (it) { ol.appendChild(historyItem(it)); });
      if (r.items.length) oldest = r.items[r.items.length - 1].task_id;
      else if (!more) oldest = null;
      if (!more && !r.items.length) ol.appendChild(el('li', { class: 'muted', text: 'nothing yet' }));
      $('history-more').hidden = !r.has_more;
    });
  }

  $('history-load').addEventListener('click', function () { loadHistory(false); });
  $('history-more').addEventListener('click', function () { loadHistory(true); });
  $('history-clear').addEventListener('click', function () {
    request('clear_history', {}).then(function (r) {
      if (!r) return;
      log('·', 'deleted ' + r.deleted + ' finished task(s)');
      loadHistory(false);
    });
  });
})();
