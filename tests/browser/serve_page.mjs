// Drives the lcm serve page in headless Chromium: type a prompt, press Enter, watch the progress,
// wait for the image, check the download link and history, cancel a second run, and save
// screenshots (desktop and phone width).
//
//   node serve_page.mjs http://127.0.0.1:PORT/ OUT_DIR
//
// Exits 0 when every check passed; prints what failed otherwise.
import { chromium } from "playwright-core";

const [url, outDir] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let failures = 0;
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures++;
}

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("model").textContent !== "");
  check(true, "capabilities loaded: model " + (await page.textContent("#model")));

  // Every visible form control has a label (screen readers, and a bigger target on a phone).
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, textarea")]
    .filter((el) => !el.closest("[hidden]") && !document.querySelector(`label[for="${el.id}"]`)).map((el) => el.id));
  check(unlabelled.length === 0, "every visible control has a label " + unlabelled.join(","));
  // Tab order follows the form top to bottom: prompt first, the Generate button after the inputs.
  await page.focus("#prompt");
  const order = [];
  for (let i = 0; i < 12; i++) { await page.keyboard.press("Tab"); order.push(await page.evaluate(() => document.activeElement.id)); }
  check(order.indexOf("go") > order.indexOf("steps") && order.indexOf("steps") > order.indexOf("width"),
    "keyboard focus order: " + order.join(" > "));

  // Record every status line the page shows, however briefly.
  await page.evaluate(() => {
    window.statuses = [];
    const status = document.getElementById("status");
    new MutationObserver(() => window.statuses.push(status.textContent))
      .observe(status, { childList: true, characterData: true, subtree: true });
  });
  await page.focus("#prompt");
  await page.keyboard.type("a watercolor fox in the snow");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.getElementById("go").textContent === "Cancel", null, { timeout: 10000 });
  check(true, "Generate became Cancel while running");
  await page.waitForSelector("#images figure img", { timeout: 60000 });
  await page.waitForFunction(() => { const i = document.querySelector("#images figure img"); return i && i.complete && i.naturalWidth > 0; });
  const statuses = await page.evaluate(() => window.statuses);
  const progress = statuses.find((s) => /^Step \d+ of \d+ · .* elapsed · ETA /.test(s));
  check(!!progress, "progress was shown: " + (progress || statuses.join(" | ")));
  const done = await page.textContent("#status");
  check(/^Done: 1 image/.test(done), "status after the run: " + done);
  check((await page.textContent("#go")) === "Generate", "the button is Generate again");
  const href = await page.getAttribute("#images figure a", "href");
  check(href && href.startsWith("data:image/png;base64,iVBOR"), "download link is a PNG");
  const params = await page.textContent("#parameters");
  check(params.startsWith("a watercolor fox in the snow\nSteps: ") && params.includes("Seed: "), "parameters shown: " + params.split("\n")[1]);
  check((await page.locator("#history button").count()) === 1, "history strip has the result");
  await page.screenshot({ path: `${outDir}/serve.png`, fullPage: true });

  // A second run, cancelled from the button after its first step.
  await page.click("#go");
  await page.waitForFunction(() => /^Step /.test(document.getElementById("status").textContent), null, { timeout: 20000 });
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("status").textContent === "Cancelled.", null, { timeout: 10000 });
  check(true, "Cancel stopped the second run");
  let health = {};
  for (let i = 0; i < 150; i++) {
    health = await (await fetch(new URL("/health", url))).json();
    if (health.cancelled >= 1 && !health.busy) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  check(health.cancelled >= 1 && !health.busy, `server cancelled the job (health: ${JSON.stringify(health)})`);
  check((await page.locator("#history button").count()) === 1, "a cancelled run adds nothing to the history");

  // Phone width: the form and the result stack in one column.
  await page.setViewportSize({ width: 390, height: 844 });
  const formBox = await page.locator("#form").boundingBox(), outBox = await page.locator("#output").boundingBox();
  check(formBox.width <= 390 && outBox.y >= formBox.y + formBox.height - 1, "one column on a phone-sized screen");
  await page.screenshot({ path: `${outDir}/serve-phone.png`, fullPage: true });
  check(pageErrors.length === 0, "no errors in the page: " + pageErrors.join(" | "));
} finally {
  await browser.close();
}
process.exit(failures ? 1 : 0);
