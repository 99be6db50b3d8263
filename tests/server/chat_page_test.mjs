// The chat page in headless Chromium, driven through the DevTools protocol
// over a pipe (--remote-debugging-pipe: no WebSocket client, no npm package):
// load the page, set the system prompt and sampling, type a message, press
// Enter, watch the reply stream in (its text grows over several polls), see
// the tokens/s line, take a screenshot.
//
//   node chat_page_test.mjs BASE_URL SCREENSHOT.png [CHROMIUM]
// Prints "N passed, M failed"; exits 1 on failure.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [baseUrl, shotPath, chromiumArg] = process.argv.slice(2);
const chromium = chromiumArg || "chromium";
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "vb-chromium-"));
const browser = spawn(chromium, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
  "--no-default-browser-check", "--remote-debugging-pipe", `--user-data-dir=${profile}`,
  "--window-size=1100,760", "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let stderr = "";
browser.stdio[2].on("data", (d) => { stderr += d; });

let nextId = 1;
const pending = new Map();
let buf = Buffer.alloc(0);
browser.stdio[4].on("data", (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  let at;
  while ((at = buf.indexOf(0)) >= 0) {
    const msg = JSON.parse(buf.subarray(0, at).toString("utf8"));
    buf = buf.subarray(at + 1);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(JSON.stringify(msg.error)));
      else resolve(msg.result);
    }
  }
});
function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  browser.stdio[3].write(JSON.stringify(msg) + "\0");
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    setTimeout(() => {
      if (pending.has(id)) { pending.delete(id); reject(new Error(`${method}: no answer in 20 s`)); }
    }, 20000);
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let passed = 0, failed = 0;
function check(cond, what) {
  if (cond) { passed++; console.log(`ok   ${what}`); } else { failed++; console.log(`FAIL ${what}`); }
}

let exitCode = 1;
try {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const run = async (expr) => {
    const r = await send("Runtime.evaluate", { expression: expr, returnByValue: true, awaitPromise: true },
                         sessionId);
    if (r.exceptionDetails) throw new Error(`${expr}: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  };
  await send("Page.enable", {}, sessionId);
  await send("Page.navigate", { url: baseUrl + "/" }, sessionId);
  let model = "";
  for (let i = 0; i < 200 && !/parallel/.test(model); i++) {
    await sleep(50);
    model = await run("document.getElementById('model') ? document.getElementById('model').textContent : ''");
  }
  check(/parallel/.test(model), `the page loads and shows the model (${model})`);

  // Settings: a system prompt, sampling, enough tokens to see the stream grow.
  await run(`(() => {
    document.getElementById('system').value = 'You are a storyteller.';
    document.getElementById('temperature').value = '0.7';
    document.getElementById('seed').value = '7';
    document.getElementById('max_tokens').value = '600';
    document.getElementById('input').focus();
    return true; })()`);
  await send("Input.insertText", { text: "Tell me a story about Lily." }, sessionId);
  await send("Input.dispatchKeyEvent", { type: "keyDown", key: "Enter", code: "Enter",
                                         windowsVirtualKeyCode: 13, text: "\r" }, sessionId);
  await send("Input.dispatchKeyEvent", { type: "keyUp", key: "Enter", code: "Enter",
                                         windowsVirtualKeyCode: 13 }, sessionId);
  // Poll the reply while it streams.
  const lengths = new Set();
  let state = null;
  const until = Date.now() + 60000;
  while (Date.now() < until) {
    state = await run(`(() => {
      const a = document.querySelectorAll('.msg.assistant');
      const last = a[a.length - 1];
      return { n: a.length, text: last ? last.querySelector('.content').textContent : '',
               done: !!(last && last.dataset.done), user: document.querySelectorAll('.msg.user').length,
               error: document.querySelectorAll('.msg.error').length,
               stats: document.getElementById('stats').textContent }; })()`);
    if (state.text) lengths.add(state.text.length);
    if (state.done) break;
    await sleep(5);
  }
  check(state && state.user === 1, "the message appears in the conversation");
  check(state && state.done && state.error === 0 && state.text.length > 20,
        `a reply arrives (${state ? state.text.length : 0} characters)`);
  const partial = [...lengths].filter((n) => state && n < state.text.length).length;
  check(partial >= 1, `the reply streams in (${partial} partial states seen before the end)`);
  check(state && /tokens\/s/.test(state.stats), `tokens/s shown (${state ? state.stats : ""})`);
  const shot = await send("Page.captureScreenshot", { format: "png" }, sessionId);
  fs.writeFileSync(shotPath, Buffer.from(shot.data, "base64"));
  check(fs.statSync(shotPath).size > 10000, `screenshot ${shotPath}`);
  exitCode = failed ? 1 : 0;
} catch (e) {
  console.log(`FAIL ${e.stack || e}`);
  if (stderr) console.log("chromium: " + stderr.slice(-2000));
  failed++;
} finally {
  try { await send("Browser.close"); } catch (e) { /* gone */ }
  browser.kill();
  await new Promise((r) => { if (browser.exitCode !== null) r(); else browser.on("exit", r); });
  try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* chromium's leftovers */ }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : exitCode);
