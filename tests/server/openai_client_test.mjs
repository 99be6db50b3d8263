// vibrant-server end to end with the official OpenAI client (npm "openai").
//
//   node openai_client_test.mjs BASE_URL API_KEY REFERENCE_JSON [load_seconds]
//
// BASE_URL is a running server on stories260K (tests/server/server_e2e.sh
// starts it). What it checks:
//   * chat and completions, whole and streamed, through the client; usage
//     counts in every reply; logprobs; stop; seed reproducibility;
//   * greedy completions equal llama.cpp's greedy text for the bundled
//     prompts (tests/data/stories260K.reference.json), alone and as 16
//     concurrent requests;
//   * errors surface as the client's APIError with OpenAI's error object;
//   * a stream the client aborts mid-way frees its KV blocks (/metrics);
//   * a load test: clients for load_seconds, no errors, resident memory after
//     the run within 16 MiB of after the warm-up.
// Prints "N passed, M failed" and exits 1 on any failure.
import assert from "node:assert/strict";
import fs from "node:fs";
import OpenAI from "openai";

const [baseUrl, apiKey, refPath, loadArg] = process.argv.slice(2);
const loadSeconds = Number(loadArg || 10);
const ref = JSON.parse(fs.readFileSync(refPath, "utf8"));
const client = new OpenAI({ baseURL: baseUrl + "/v1", apiKey, maxRetries: 0, timeout: 120000 });

let passed = 0, failed = 0;
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

async function metrics() {
  const r = await fetch(baseUrl + "/metrics");
  const text = await r.text();
  const m = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const sp = line.lastIndexOf(" ");
    m[line.slice(0, sp)] = Number(line.slice(sp + 1));
  }
  return m;
}

async function waitFor(pred, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    const m = await metrics();
    if (pred(m)) return m;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(m)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const greedy = (prompt, n) =>
  client.completions.create({ model: "stories260K", prompt, max_tokens: n, temperature: 0 });

await test("models lists the one model", async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].object, "model");
});

await test("completions: greedy text is llama.cpp's, with usage", async () => {
  for (const c of ref.cases) {
    const r = await greedy(c.prompt, c.generated.length);
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices[0].text, c.generated_text, c.prompt);
    assert.equal(r.choices[0].finish_reason, "length");
    assert.deepEqual(r.usage, {
      prompt_tokens: c.prompt_tokens.length,
      completion_tokens: c.generated.length,
      total_tokens: c.prompt_tokens.length + c.generated.length,
    });
  }
});

await test("completions: token-id prompts and logprobs", async () => {
  const c = ref.cases[0];
  const r = await client.completions.create({
    model: "m", prompt: c.prompt_tokens, max_tokens: 4, temperature: 0, logprobs: 3,
  });
  assert.equal(r.choices[0].text, ref.cases[0].generated_text.slice(0, r.choices[0].text.length));
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  for (let i = 0; i < 4; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = Object.values(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...top) - lp.token_logprobs[i]) < 1e-6);
  }
});

await test("chat: whole reply with usage and logprobs", async () => {
  const r = await client.chat.completions.create({
    model: "m",
    messages: [{ role: "system", content: "Tell a story." }, { role: "user", content: "Once upon a time" }],
    max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(r.usage.prompt_tokens > 5);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
  assert.equal(r.choices[0].logprobs.content.length, r.usage.completion_tokens);
  for (const t of r.choices[0].logprobs.content) {
    assert.equal(t.top_logprobs.length, 2);
    assert.deepEqual(t.bytes, [...Buffer.from(t.token, "utf8")]);
  }
});

await test("chat: streaming gives the whole reply's text, then usage", async () => {
  const args = {
    model: "m", messages: [{ role: "user", content: "Lily wanted to play" }], max_tokens: 24,
    temperature: 0,
  };
  const whole = await client.chat.completions.create(args);
  const stream = await client.chat.completions.create({
    ...args, stream: true, stream_options: { include_usage: true },
  });
  let text = "", chunks = 0, usage = null, finish = null, role = null;
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    if (!ch.choices.length) continue;
    const c = ch.choices[0];
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) { text += c.delta.content; chunks++; }
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(role, "assistant");
  assert.equal(text, whole.choices[0].message.content);
  assert.ok(chunks > 1, "streamed in several chunks");
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
});

await test("completions: streaming and stop strings", async () => {
  const c = ref.cases[0];
  const stop = c.generated_text.slice(20, 25);
  const stream = await client.completions.create({
    model: "m", prompt: c.prompt, max_tokens: 32, temperature: 0, stop: [stop], stream: true,
  });
  let text = "", finish = null;
  for await (const ch of stream) {
    text += ch.choices[0].text;
    if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
  }
  assert.equal(text, c.generated_text.slice(0, c.generated_text.indexOf(stop)));
  assert.equal(finish, "stop");
});

await test("sampling: the same seed gives the same text, another seed another", async () => {
  const args = { model: "m", prompt: "Once upon a time", max_tokens: 24, temperature: 1.0, top_p: 0.95 };
  const a = await client.completions.create({ ...args, seed: 1234 });
  const b = await client.completions.create({ ...args, seed: 1234 });
  const texts = new Set();
  for (let s = 0; s < 4; s++) texts.add((await client.completions.create({ ...args, seed: s })).choices[0].text);
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.ok(texts.size > 1, "different seeds differ");
});

await test("16 concurrent greedy requests each get their text alone", async () => {
  const prompts = [];
  for (let i = 0; i < 16; i++) prompts.push(ref.cases[i % ref.cases.length]);
  const before = await metrics();
  const rs = await Promise.all(prompts.map((c) => greedy(c.prompt, 32)));
  rs.forEach((r, i) => assert.equal(r.choices[0].text, prompts[i].generated_text, `request ${i}`));
  const after = await metrics();
  // They shared steps: fewer steps than 16 x 32 tokens one at a time.
  const steps = after["vibrant_step_seconds_count"] - before["vibrant_step_seconds_count"];
  assert.ok(steps < 16 * 32, `${steps} steps`);
});

await test("errors: the client's APIError with OpenAI's object", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], temperature: 5 }),
    (e) => e.status === 400 && e.error && e.error.param === "temperature" && e.type === "invalid_request_error");
  await assert.rejects(
    client.completions.create({ model: "m", prompt: "x".repeat(20000), max_tokens: 1 }),
    (e) => e.status === 400 && e.code === "context_length_exceeded");
  const bad = new OpenAI({ baseURL: baseUrl + "/v1", apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e.status === 401 && e.code === "invalid_api_key");
});

await test("a client that disconnects mid-stream frees its KV blocks", async () => {
  await waitFor((m) => m["vibrant_requests_running"] === 0, 60000, "an idle server");
  const before = await metrics();
  const ac = new AbortController();
  const stream = await client.completions.create(
    { model: "m", prompt: "Once upon a time", max_tokens: 1500, temperature: 0.8, seed: 3, ignore_eos: true,
      stream: true },
    { signal: ac.signal });
  let n = 0;
  let seenBlocks = 0;
  try {
    for await (const ch of stream) {
      if (++n === 40) {
        seenBlocks = (await metrics())["vibrant_kv_blocks_used"];
        ac.abort();
      }
    }
  } catch (e) {
    if (e.name !== "AbortError" && !(e.constructor && e.constructor.name === "APIUserAbortError")) throw e;
  }
  assert.ok(seenBlocks > 0, "the stream held blocks");
  const after = await waitFor(
    (m) => m["vibrant_kv_blocks_used"] === 0 && m["vibrant_requests_running"] === 0, 60000,
    "the blocks to be freed");
  assert.equal(after["vibrant_requests_cancelled_total"] - before["vibrant_requests_cancelled_total"], 1);
  // It stopped well before its 1500 tokens.
  const generated = after["vibrant_generation_tokens_total"] - before["vibrant_generation_tokens_total"];
  assert.ok(generated < 1000, `${generated} tokens generated`);
});

await test(`load: clients for ${loadSeconds} s, no errors, no memory growth`, async () => {
  const clients = 12;
  const round = async (seconds) => {
    const until = Date.now() + seconds * 1000;
    let requests = 0, errors = 0;
    await Promise.all(Array.from({ length: clients }, async (_, i) => {
      while (Date.now() < until) {
        try {
          if (i % 3 === 0) {
            const s = await client.chat.completions.create({
              model: "m", messages: [{ role: "user", content: "Tell me about Lily " + i }], max_tokens: 40,
              stream: true, seed: requests, temperature: 0.7,
            });
            for await (const _ of s) { /* drain */ }
          } else if (i % 3 === 1) {
            await greedy(ref.cases[i % ref.cases.length].prompt, 24 + (i % 7));
          } else {
            // A disconnect in the middle of a stream, now and then.
            const ac = new AbortController();
            const s = await client.completions.create(
              { model: "m", prompt: "One day", max_tokens: 200, stream: true, seed: i }, { signal: ac.signal });
            let k = 0;
            try {
              for await (const _ of s) if (++k === 10) ac.abort();
            } catch (e) { /* the abort */ }
          }
          requests++;
        } catch (e) {
          errors++;
          console.log("load error:", e.status, e.message);
        }
      }
    }));
    return { requests, errors };
  };
  const warm = await round(Math.min(3, loadSeconds / 3));
  await waitFor((m) => m["vibrant_requests_running"] === 0, 60000, "idle after warm-up");
  const rss0 = (await metrics())["process_resident_memory_bytes"];
  const main = await round(loadSeconds);
  const m = await waitFor((x) => x["vibrant_requests_running"] === 0 && x["vibrant_kv_blocks_used"] === 0,
                          60000, "idle after the load");
  const rss1 = m["process_resident_memory_bytes"];
  console.log(`     load: ${warm.requests + main.requests} requests, ${main.errors + warm.errors} errors, ` +
              `RSS ${(rss0 / 2 ** 20).toFixed(1)} -> ${(rss1 / 2 ** 20).toFixed(1)} MiB`);
  assert.equal(warm.errors + main.errors, 0);
  assert.ok(main.requests >= clients, `${main.requests} requests`);
  if (process.env.VIBRANT_SANITIZED) {
    // ASan keeps freed memory in its quarantine (256 MiB by default) and
    // pads every allocation, so RSS measures ASan, not the server. The leak
    // check under the sanitizers is LeakSanitizer's, at the server's exit
    // (server_e2e.sh requires exit 0 after SIGTERM).
    console.log("     load: RSS growth not checked under the sanitizers (VIBRANT_SANITIZED); LeakSanitizer checks at exit");
  } else {
    assert.ok(rss1 - rss0 < 16 * 2 ** 20, `RSS grew by ${((rss1 - rss0) / 2 ** 20).toFixed(1)} MiB`);
  }
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
