// Drives the lcm serve page in headless Chromium: type a prompt, press Enter, watch the progress,
// wait for the image, check the download link, history and the seed written back, cancel a second
// run, reuse the seed (same image again), go back to random seeds, restore an earlier result's
// settings from the history, start from a JPEG (its thumbnail shown), and save screenshots
// (desktop and phone width).
//
//   node serve_page.mjs http://127.0.0.1:PORT/ OUT_DIR INIT.jpg
//
// Exits 0 when every check passed; prints what failed otherwise.
import { chromium } from "playwright-core";

const [url, outDir, initJpeg] = process.argv.slice(2);
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
  for (let i = 0; i < 20; i++) { await page.keyboard.press("Tab"); order.push(await page.evaluate(() => document.activeElement.id)); }
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
  // The seed drawn at random is written back into the (disabled) seed field.
  const seedUsed = await page.inputValue("#seed");
  check(/^\d+$/.test(seedUsed) && params.includes(`Seed: ${seedUsed},`) && done.includes(`seed ${seedUsed}`),
    `seed written back: field ${seedUsed}, status "${done}"`);
  check(await page.isChecked("#randomize") && await page.isDisabled("#seed"), "still randomizing after the run");
  const firstImage = await page.getAttribute("#images figure img", "src");
  const firstSteps = await page.inputValue("#steps");
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

  // "Reuse seed": randomizing stops, the field holds the seed shown; the same prompt gives the same image.
  await page.click("#seed_reuse");
  check(!(await page.isChecked("#randomize")) && !(await page.isDisabled("#seed")) &&
    (await page.inputValue("#seed")) === seedUsed, "Reuse seed put " + (await page.inputValue("#seed")) + " in the field");
  await page.click("#go");
  await page.waitForFunction(() => /^Done: /.test(document.getElementById("status").textContent), null, { timeout: 60000 });
  check((await page.textContent("#parameters")).includes(`Seed: ${seedUsed},`), "the reused seed ran");
  check((await page.getAttribute("#images figure img", "src")) === firstImage, "same seed, same prompt: the same image");
  check((await page.locator("#history button").count()) === 2, "history has both results");
  // "Random": back to a new seed per run.
  await page.click("#seed_random");
  check(await page.isChecked("#randomize") && await page.isDisabled("#seed"), "Random turns randomizing on");

  // History: change the form, then click the first result's thumbnail: its image and settings return.
  await page.fill("#prompt", "something else entirely");
  await page.evaluate(() => { const s = document.getElementById("steps"); s.value = 1; s.dispatchEvent(new Event("input")); });
  await page.locator("#history button").last().click();
  check((await page.inputValue("#prompt")) === "a watercolor fox in the snow", "history restored the prompt");
  check((await page.inputValue("#steps")) === firstSteps && (await page.textContent("#steps_out")) === firstSteps,
    `history restored steps ${firstSteps}`);
  check((await page.inputValue("#seed")) === seedUsed && !(await page.isChecked("#randomize")), "history restored the seed");
  check((await page.getAttribute("#images figure img", "src")) === firstImage, "history shows that image again");
  check(/^Settings of this image restored/.test(await page.textContent("#status")), "status: " + await page.textContent("#status"));
  await page.screenshot({ path: `${outDir}/serve-history.png`, fullPage: true });

  // A JPEG init image: a thumbnail appears beside the input, and img2img runs from it.
  await page.setInputFiles("#init_image", initJpeg);
  await page.waitForFunction(() => { const i = document.querySelector("#init_preview img"); return i && i.complete && i.naturalWidth > 0; });
  check(await page.isVisible("#init_preview"), "init image thumbnail shown: " + await page.textContent("#init_preview figcaption"));
  await page.click("#seed_random");
  await page.click("#go");
  await page.waitForFunction(() => /^(Done: |Request failed|.*error)/i.test(document.getElementById("status").textContent) ||
    document.getElementById("status").className === "error", null, { timeout: 60000 });
  const img2img = await page.textContent("#status");
  check(/^Done: /.test(img2img), "img2img from the JPEG: " + img2img);
  check((await page.textContent("#parameters")).includes("Denoising strength: "), "img2img parameters: " +
    (await page.textContent("#parameters")).split("\n").pop());
  await page.screenshot({ path: `${outDir}/serve-img2img.png`, fullPage: true });

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
