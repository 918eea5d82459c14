#!/usr/bin/env node
// Real-player check: play an HLS master playlist with hls.js in headless
// Debian Chromium (driven by playwright-core) and print ONE JSON line of
// measured facts to stdout. Diagnostics go to stderr.
//
//   node play.mjs <master_url> [--timeout-ms N] [--min-advance-s S]
//
// Exit codes: 0 = ran to completion without a fatal hls.js error,
//             1 = fatal hls.js / media error (or hls.js unsupported),
//             2 = timeout, 3 = usage or harness/browser failure.
// The JSON line is printed in every case where a browser was started.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const CHROMIUM = process.env.VIDPIPE_CHROMIUM || '/usr/bin/chromium';
const PREFIX = '/__vidpipe_player__/';

function usage(msg) {
  if (msg) process.stderr.write(`play.mjs: ${msg}\n`);
  process.stderr.write('usage: node play.mjs <master_url> [--timeout-ms N] [--min-advance-s S] [--live]\n');
  process.exit(3);
}

function parseArgs(argv) {
  const opts = { masterUrl: null, timeoutMs: 30000, minAdvanceS: 1.5, live: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const take = () => {
      const eq = a.indexOf('=');
      if (eq !== -1) return a.slice(eq + 1);
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--timeout-ms' || a.startsWith('--timeout-ms=')) opts.timeoutMs = Number(take());
    else if (a === '--min-advance-s' || a.startsWith('--min-advance-s=')) opts.minAdvanceS = Number(take());
    else if (a === '--live') opts.live = true;
    else if (a === '-h' || a === '--help') usage();
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (opts.masterUrl === null) opts.masterUrl = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.masterUrl) usage('missing master_url');
  if (!(opts.timeoutMs > 0)) usage('--timeout-ms must be a positive number');
  if (!(opts.minAdvanceS > 0)) usage('--min-advance-s must be a positive number');
  let url;
  try {
    url = new URL(opts.masterUrl);
  } catch {
    usage(`master_url must be an absolute http(s) URL: ${opts.masterUrl}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') usage('master_url must be http(s)');
  opts.origin = url.origin;
  return opts;
}

// ---------------------------------------------------------------------------
// In-page harness. Runs inside Chromium (serialized by page.evaluate), so it
// may only use browser globals. It fills window.__report progressively and
// sets report.done when finished; node polls that with waitForFunction, and on
// timeout it still reads the partial report.
// ---------------------------------------------------------------------------
function harness({ masterUrl, minAdvanceS, live }) {
  const Hls = window.Hls;
  const video = document.getElementById('v');
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const R = (window.__report = {
    done: false,
    stage: 'init',
    hlsVersion: Hls ? Hls.version : null,
    hlsSupported: Hls ? Hls.isSupported() : false,
    codecSupport: {},
    levels: [],
    audioTracks: [],
    subtitleTracks: [],
    subtitleTrackCount: 0,
    playback: null,
    switch: null,
    fatalErrors: [],
    errors: [],
    events: [],
    quality: null,
  });
  const note = (what, extra) => {
    if (R.events.length < 200) R.events.push({ t: ms(), what, ...(extra || {}) });
  };
  const snap = () => ({
    currentTime: video.currentTime,
    videoWidth: video.videoWidth,
    videoHeight: video.videoHeight,
    level: hls ? hls.currentLevel : -1,
    paused: video.paused,
    ended: video.ended,
    readyState: video.readyState,
  });

  // Evidence for "can this Chromium decode it at all" (proprietary codecs).
  for (const type of [
    'video/mp4; codecs="avc1.42E01E"',
    'video/mp4; codecs="avc1.64001f"',
    'video/mp4; codecs="avc1.640028"',
    'audio/mp4; codecs="mp4a.40.2"',
    'video/mp4; codecs="avc1.64001f,mp4a.40.2"',
  ]) {
    R.codecSupport[type] = window.MediaSource ? MediaSource.isTypeSupported(type) : false;
  }
  R.canPlayTypeHls = video.canPlayType('application/vnd.apple.mpegurl');

  if (!Hls || !R.hlsSupported) {
    R.fatalErrors.push({ type: 'harness', details: 'hlsNotSupported', fatal: true,
      reason: Hls ? 'Hls.isSupported() returned false' : 'hls.js did not load' });
    R.done = true;
    return;
  }

  // Event-driven waiters: each waiter has a predicate re-checked on every
  // relevant media / hls.js event; a fatal error rejects all of them.
  const waiters = new Set();
  const check = () => {
    for (const w of [...waiters]) {
      let v;
      try {
        v = w.pred();
      } catch (e) {
        waiters.delete(w);
        w.reject(e);
        continue;
      }
      if (v) {
        waiters.delete(w);
        w.resolve(v);
      }
    }
  };
  const until = (label, pred) => {
    R.stage = label;
    return new Promise((resolve, reject) => {
      waiters.add({ pred, resolve, reject });
      check();
    });
  };
  const failAll = (err) => {
    for (const w of [...waiters]) {
      waiters.delete(w);
      w.reject(err);
    }
  };
  for (const ev of ['loadedmetadata', 'canplay', 'playing', 'timeupdate', 'resize', 'seeked', 'ended', 'waiting', 'error']) {
    video.addEventListener(ev, () => {
      if (ev !== 'timeupdate') note(`video:${ev}`, { ct: video.currentTime, w: video.videoWidth });
      check();
    });
  }

  var hls = new Hls({
    debug: false,
    autoStartLoad: false, // we lock the start level first, then startLoad()
    startLevel: 0,
    capLevelToPlayerSize: false,
    enableWorker: true,
  });
  window.__hls = hls;

  hls.on(Hls.Events.ERROR, (_e, d) => {
    const entry = {
      t: ms(),
      type: d.type,
      details: d.details,
      fatal: !!d.fatal,
      reason: d.reason || (d.error && String(d.error.message || d.error)) || null,
      url: (d.frag && d.frag.url) || (d.context && d.context.url) || d.url || null,
      level: d.frag ? d.frag.level : d.level,
    };
    if (d.fatal) {
      R.fatalErrors.push(entry);
      failAll(new Error(`fatal hls.js error: ${d.type}/${d.details}`));
    } else if (R.errors.length < 50) {
      R.errors.push(entry);
    }
  });
  video.addEventListener('error', () => {
    const me = video.error;
    R.fatalErrors.push({ t: ms(), type: 'mediaElement', details: me ? `MEDIA_ERR_${me.code}` : 'unknown',
      fatal: true, reason: me ? me.message : null, url: null });
    failAll(new Error('HTMLMediaElement error'));
  });
  for (const ev of [Hls.Events.LEVEL_LOADED, Hls.Events.LEVEL_SWITCHED, Hls.Events.FRAG_CHANGED,
    Hls.Events.FRAG_BUFFERED, Hls.Events.BUFFER_FLUSHED]) {
    hls.on(ev, (_e, d) => {
      if (ev === Hls.Events.LEVEL_SWITCHED) note('hls:levelSwitched', { level: d.level });
      if (ev === Hls.Events.FRAG_CHANGED) note('hls:fragChanged', { level: d.frag.level, sn: d.frag.sn });
      check();
    });
  }

  const levelInfo = (l, index) => ({
    index,
    width: l.width,
    height: l.height,
    bitrate: l.bitrate,
    averageBitrate: l.averageBitrate,
    codecs: l.codecSet || [l.videoCodec, l.audioCodec].filter(Boolean).join(','),
    videoCodec: l.videoCodec || null,
    audioCodec: l.audioCodec || null,
    frameRate: l.frameRate || null,
    uri: l.uri || l.url || null,
  });
  const trackInfo = (t) => ({
    id: t.id, name: t.name, lang: t.lang || null, groupId: t.groupId || null,
    default: !!t.default, autoselect: !!t.autoselect, forced: !!t.forced,
    characteristics: t.characteristics || null, url: t.url || null,
  });

  const readTracks = () => {
    R.audioTracks = (hls.audioTracks || []).map(trackInfo);
    R.subtitleTracks = (hls.subtitleTracks || []).map(trackInfo);
    R.subtitleTrackCount = R.subtitleTracks.length;
  };

  const run = async () => {
    let manifest = null;
    hls.once(Hls.Events.MANIFEST_PARSED, (_e, d) => {
      manifest = d;
      check();
    });
    hls.attachMedia(video);
    hls.loadSource(masterUrl);
    await until('manifest', () => manifest !== null);
    R.levels = hls.levels.map(levelInfo);
    // hls.audioTracks / hls.subtitleTracks only list the renditions of the
    // active level's group, so they are (re)read once a level is loaded.
    R.manifestAudioTrackCount = manifest.audioTracks ? manifest.audioTracks.length : 0;
    R.manifestSubtitleTrackCount = manifest.subtitleTracks ? manifest.subtitleTracks.length : 0;
    note('hls:manifestParsed', { levels: hls.levels.length });

    // Lock to the lowest-bitrate level so the later forced switch to the top
    // level is a real change (on localhost ABR would jump to the top itself).
    let bottom = 0;
    let top = 0;
    hls.levels.forEach((l, i) => {
      const b = hls.levels[bottom];
      const t = hls.levels[top];
      if (l.bitrate < b.bitrate || (l.bitrate === b.bitrate && l.width < b.width)) bottom = i;
      if (l.bitrate > t.bitrate || (l.bitrate === t.bitrate && l.width > t.width)) top = i;
    });
    hls.loadLevel = bottom;
    hls.startLoad(0);

    await until('levelLoaded', () => hls.levels[bottom].details);
    readTracks();

    const playPromise = video.play();
    playPromise.catch((e) => note('video:playRejected', { reason: String(e) }));

    // 1. Playback starts and currentTime advances.
    await until('playing', () => !video.paused && video.readyState >= 2 && video.currentTime > 0);
    const start = snap();
    R.playback = { start: start.currentTime, startLevel: bottom };

    // 1a. Live: the ladder is still encoding. Play on past what was encoded when playback
    // began, until the playlist ends (ENDLIST: the VOD playlist replaced the EVENT one).
    if (live) {
      const details = () => hls.levels[hls.currentLevel >= 0 ? hls.currentLevel : bottom].details;
      const first = details();
      R.live = { atStart: { live: first.live, type: first.type || null,
        fragments: first.fragments.length, seconds: first.totalduration } };
      await until('playedPastLiveEdge', () => video.currentTime > R.live.atStart.seconds + 0.5);
      R.live.playedPast = video.currentTime;
      await until('ended', () => details() && !details().live);
      const last = details();
      R.live.atEnd = { live: last.live, type: last.type || null,
        fragments: last.fragments.length, seconds: last.totalduration };
      R.live.stalls = R.events.filter((e) => e.what === 'video:waiting').length;
      R.playback = { start: start.currentTime, end: video.currentTime,
        advancedS: video.currentTime - start.currentTime };
      return;
    }

    // 1b. Captions: turn on the first subtitle track and wait for a cue to go active.
    if (R.manifestSubtitleTrackCount > 0) {
      hls.subtitleDisplay = true;
      hls.subtitleTrack = 0;
      const activeCue = () => {
        for (const track of video.textTracks) {
          if (track.mode !== 'disabled' && track.activeCues && track.activeCues.length > 0) {
            return { label: track.label, language: track.language, text: track.activeCues[0].text };
          }
        }
        return null;
      };
      await until('cueActive', () => activeCue() !== null || video.ended);
      R.captions = { active: activeCue(), at: video.currentTime,
        textTracks: [...video.textTracks].map((t) => ({ label: t.label, language: t.language,
          mode: t.mode, cues: t.cues ? t.cues.length : 0 })) };
    }
    await until('advance', () => video.currentTime - start.currentTime >= minAdvanceS || video.ended);
    const at = snap();
    R.playback = {
      start: start.currentTime,
      end: at.currentTime,
      advancedS: at.currentTime - start.currentTime,
      advanced: at.currentTime > start.currentTime,
      startLevel: bottom,
      level: at.level,
      levelWidth: at.level >= 0 ? hls.levels[at.level].width : null,
      levelHeight: at.level >= 0 ? hls.levels[at.level].height : null,
      videoWidth: at.videoWidth,
      videoHeight: at.videoHeight,
      ended: at.ended,
    };

    // 2. Forced, immediate switch to the top level (flushes the buffer).
    R.switch = { method: 'currentLevel', targetLevel: top, fromLevel: at.level,
      requestedAt: at.currentTime, happened: false };
    hls.currentLevel = top;
    await until('switch', () => hls.currentLevel === top || video.ended);
    const sw = snap();
    R.switch.happened = sw.level === top;
    R.switch.switchedAt = sw.currentTime;
    // hls.js flushes the buffer, but Chromium keeps decoding from its current
    // read position and only shows the new rendition from its next keyframe
    // (with GOP == segment that is the next segment boundary). So wait for the
    // decoded size to change ('resize'), or for the end of the media, in which
    // case the size reported is whatever the decoder last produced.
    await until('switchDecoded', () => video.ended ||
      (hls.currentLevel === top && video.videoWidth === hls.levels[top].width));
    const after = snap();
    Object.assign(R.switch, {
      level: after.level,
      levelWidth: hls.levels[top].width,
      levelHeight: hls.levels[top].height,
      videoWidth: after.videoWidth,
      videoHeight: after.videoHeight,
      currentTime: after.currentTime,
      ended: after.ended,
    });
  };

  run()
    .catch((e) => {
      R.harnessError = String((e && e.message) || e);
    })
    .finally(() => {
      readTracks();
      const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      R.quality = q ? { totalVideoFrames: q.totalVideoFrames, droppedVideoFrames: q.droppedVideoFrames } : null;
      R.finalState = snap();
      R.elapsedPageMs = ms();
      R.done = true;
      try {
        hls.stopLoad();
        video.pause();
      } catch {
        /* ignore */
      }
    });
}

function pageHtml() {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>vidpipe player e2e</title>
<script src="${PREFIX}hls.min.js"></script></head>
<body style="margin:0;background:#000">
<video id="v" muted autoplay playsinline width="1280" height="720"></video>
</body></html>`;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + opts.timeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());
  const started = Date.now();
  const hlsPath = join(dirname(require.resolve('hls.js/package.json')), 'dist', 'hls.min.js');
  const hlsSource = readFileSync(hlsPath);

  const result = {
    ok: false,
    masterUrl: opts.masterUrl,
    timedOut: false,
    browser: null,
    consoleErrors: [],
  };
  let exitCode = 3;
  let context = null;
  const userDataDir = mkdtempSync(join(tmpdir(), 'vidpipe-player-'));
  let finished = false;
  const removeProfile = () => {
    try {
      if (existsSync(userDataDir)) {
        rmSync(userDataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
      }
    } catch {
      /* ignore */
    }
  };

  const emit = () => {
    if (finished) return;
    finished = true;
    result.elapsedMs = Date.now() - started;
    process.stdout.write(`${JSON.stringify(result)}\n`);
  };

  // Hard stop: even a hung launch/close cannot outlive the timeout (+5 s grace
  // for teardown). playwright kills the browser it spawned on process exit.
  const hard = setTimeout(() => {
    result.timedOut = true;
    result.error = result.error || 'hard timeout (browser launch or teardown hung)';
    emit();
    process.on('exit', removeProfile);
    process.exit(2);
  }, opts.timeoutMs + 5000);
  hard.unref();

  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: remaining(),
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--autoplay-policy=no-user-gesture-required',
      ],
    });
    result.browser = { executable: CHROMIUM, version: context.browser() ? context.browser().version() : null };
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(remaining());
    page.on('console', (m) => {
      if ((m.type() === 'error' || m.type() === 'warning') && result.consoleErrors.length < 30) {
        result.consoleErrors.push(`${m.type()}: ${m.text()}`);
      }
    });
    page.on('pageerror', (e) => {
      if (result.consoleErrors.length < 30) result.consoleErrors.push(`pageerror: ${e.message}`);
    });
    page.on('crash', () => {
      result.error = 'page crashed';
    });

    // The harness page and hls.js are served by playwright on the media's own
    // origin, so every media request is same-origin (no CORS needed) and
    // hls.js comes from node_modules.
    await page.route(`${opts.origin}${PREFIX}**`, (route) => {
      const path = new URL(route.request().url()).pathname;
      if (path === `${PREFIX}index.html`) {
        return route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: pageHtml() });
      }
      if (path === `${PREFIX}hls.min.js`) {
        return route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', body: hlsSource });
      }
      return route.fulfill({ status: 404, body: 'not found' });
    });
    await page.goto(`${opts.origin}${PREFIX}index.html`, { waitUntil: 'load', timeout: remaining() });
    result.userAgent = await page.evaluate(() => navigator.userAgent);

    await page.evaluate(harness, { masterUrl: opts.masterUrl, minAdvanceS: opts.minAdvanceS,
      live: opts.live });
    try {
      await page.waitForFunction(() => window.__report && window.__report.done, null, {
        timeout: remaining(),
        polling: 100,
      });
    } catch (e) {
      if (e && e.name === 'TimeoutError') {
        result.timedOut = true;
      } else {
        throw e;
      }
    }
    const report = await page.evaluate(() => {
      const r = { ...window.__report };
      if (window.__hls && !r.done) r.finalState = {
        currentTime: document.getElementById('v').currentTime,
        videoWidth: document.getElementById('v').videoWidth,
        level: window.__hls.currentLevel,
      };
      return r;
    });
    Object.assign(result, report);
    if (result.timedOut) {
      result.error = `timed out after ${opts.timeoutMs} ms at stage '${report.stage}'`;
      exitCode = 2;
    } else if ((report.fatalErrors || []).length > 0) {
      result.error = `fatal: ${report.fatalErrors.map((f) => `${f.type}/${f.details}`).join(', ')}`;
      exitCode = 1;
    } else if (report.harnessError) {
      result.error = report.harnessError;
      exitCode = 3;
    } else {
      result.ok = true;
      exitCode = 0;
    }
  } catch (e) {
    result.error = String((e && e.stack) || e);
    if (e && e.name === 'TimeoutError') {
      result.timedOut = true;
      exitCode = 2;
    }
    process.stderr.write(`play.mjs: ${result.error}\n`);
  } finally {
    emit();
    if (context) {
      await Promise.race([
        context.close().catch(() => {}),
        new Promise((r) => setTimeout(r, 5000).unref()),
      ]);
    }
    removeProfile();
    // After a failed launch the browser is still running until playwright's
    // own exit handler (registered earlier, so it runs first) kills it; remove
    // the profile it may have re-created after that.
    process.on('exit', removeProfile);
    clearTimeout(hard);
  }
  process.exit(exitCode);
}

main();
