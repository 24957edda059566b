// Drives `lcm serve` with the official OpenAI SDK (npm `openai`, locked in package-lock.json);
// tests/test_serve_openai_client.c runs it against a server started with --api-key KEY --queue 1
// and a step delay.
//
// usage: node openai_client.mjs BASE_URL KEY
import OpenAI from 'openai';

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });

function check(condition, what) {
  if (!condition) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

// The width and height in a PNG's IHDR.
function pngSize(bytes) {
  check(bytes.subarray(1, 4).toString() === 'PNG', 'a PNG');
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}

async function expectError(promise, status, what) {
  try {
    await promise;
  } catch (e) {
    check(e instanceof OpenAI.APIError && e.status === status && typeof e.code === 'string' && e.type && e.message,
          `${what}: ${e.constructor.name} ${e.status} code=${e.code} type=${e.type} param=${e.param}: ${e.message}`);
    return e;
  }
  throw new Error(`FAILED: ${what}: no error`);
}

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check(ids.length >= 1 && models.data.every((m) => m.object === 'model'), `models.list: ${ids}`);
const model = await client.models.retrieve(ids[0]);
check(model.id === ids[0], `models.retrieve(${ids[0]})`);
const missing = await expectError(client.models.retrieve('no-such-model'), 404, 'models.retrieve of an unknown model');
check(missing instanceof OpenAI.NotFoundError && missing.code === 'model_not_found', 'NotFoundError model_not_found');

// images.generate with the SDK's defaults: the answer is a url this server serves.
const plain = await client.images.generate({ prompt: 'a red fox in the snow' });
check(plain.data.length === 1 && plain.data[0].url && !plain.data[0].b64_json, `default response_format url: ${plain.data[0].url}`);
const fetched = await fetch(plain.data[0].url);
check(fetched.status === 200 && fetched.headers.get('content-type') === 'image/png', 'the url serves the PNG');
const [w, h] = pngSize(Buffer.from(await fetched.arrayBuffer()));
check(w === h && w > 0, `the model's native size when no size is given: ${w}x${h}`);

const auto = await client.images.generate({ prompt: 'a red fox', size: 'auto', response_format: 'b64_json' });
const autoSize = pngSize(Buffer.from(auto.data[0].b64_json, 'base64'));
check(autoSize[0] === w && autoSize[1] === h, `size auto = the native size: ${autoSize}`);

const bad = await expectError(client.images.generate({ prompt: 'x', size: '100x64' }), 400, 'a size that is not a multiple of 8');
check(bad instanceof OpenAI.BadRequestError && bad.param === 'size' && bad.type === 'invalid_request_error', 'BadRequestError names size');
const badFormat = await expectError(client.images.generate({ prompt: 'x', response_format: 'png' }), 400, 'an unknown response_format');
check(badFormat.param === 'response_format', 'the error names response_format');

const wrongKey = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 });
const denied = await expectError(wrongKey.images.generate({ prompt: 'x' }), 401, 'a wrong API key');
check(denied instanceof OpenAI.AuthenticationError && denied.code === 'invalid_api_key', 'AuthenticationError invalid_api_key');

// The queue holds one job besides the running one: four at once, at least one is told to wait.
const results = await Promise.allSettled([1, 2, 3, 4].map(() => client.images.generate({ prompt: 'busy', response_format: 'b64_json' })));
const limited = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
check(results.some((r) => r.status === 'fulfilled'), 'some of four concurrent requests are served');
check(limited.length >= 1 && limited.every((e) => e instanceof OpenAI.RateLimitError && e.status === 429 &&
      e.code === 'rate_limit_exceeded' && Number(e.headers.get('retry-after')) >= 1),
      `the others get RateLimitError 429 rate_limit_exceeded with Retry-After (${limited.length})`);
// 1024x1024, the size OpenAI's API defaults to, is accepted and queued. A full 1024x1024 job on the
// tiny fixture model takes minutes on a CPU (one step over a minute on the test machine), so it is
// queued behind a slow job and abandoned before it starts: the disconnect cancels it unrun.
async function health() {
  return (await fetch(`${base}/health`)).json();
}
const blocker = fetch(`${base}/sdapi/v1/txt2img`, {
  method: 'POST',
  headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
  body: JSON.stringify({ prompt: 'a slow job', steps: 8 }),
});
for (let i = 0; i < 600 && !(await health()).busy; i++) await new Promise((resolve) => setTimeout(resolve, 20));
const before = await health();
const abort = new AbortController();
const large = client.images.generate({ prompt: 'a red fox', size: '1024x1024' }, { signal: abort.signal });
let queued = false;
for (let i = 0; i < 600 && !queued; i++) {
  queued = (await health()).queued === 1;
  if (!queued) await new Promise((resolve) => setTimeout(resolve, 20));
}
abort.abort();
const aborted = await large.then(() => 'answered', (e) => e);
check(before.busy && queued && aborted instanceof OpenAI.APIUserAbortError, `size 1024x1024 is accepted and queued (${aborted})`);
check((await blocker).status === 200, 'the job ahead of it finished');
let after = await health();
for (let i = 0; i < 200 && after.queued + after.busy > 0; i++) {
  await new Promise((resolve) => setTimeout(resolve, 50));
  after = await health();
}
check(after.cancelled === before.cancelled + 1 && !after.busy, 'the abandoned 1024x1024 job was cancelled before it ran');
console.log('all checks passed');
