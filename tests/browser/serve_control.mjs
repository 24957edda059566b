// The ControlNet controls of the lcm serve page in headless Chromium, against a server started with
// --controlnet, --lora and --control-weights: the controls are shown, a photo is uploaded and
// turned into a normal map, and the result shows the image with the normal map beside it.
//
//   node serve_control.mjs http://127.0.0.1:PORT/ OUT_DIR PHOTO.png
//
// Exits 0 when every check passed; prints what failed otherwise.
import { chromium } from "playwright-core";

const [url, outDir, photo] = process.argv.slice(2);
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
  check(await page.isVisible("#control_image"), "the ControlNet controls are shown");
  check(await page.isVisible("#control_scale"), "the control scale is shown");
  check((await page.inputValue("#control_module")) === "normal_bae", "normal_bae is offered and chosen by default");
  check(await page.isVisible("#processor_res"), "the preprocessor resolution is shown for normal_bae");
  check(/LoRA: /.test(await page.textContent("#loras")), "the fused LoRA is named: " + (await page.textContent("#loras")));
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, textarea, select")]
    .filter((el) => !el.closest("[hidden]") && !document.querySelector(`label[for="${el.id}"]`)).map((el) => el.id));
  check(unlabelled.length === 0, "every visible control has a label " + unlabelled.join(","));

  // Without a control image the page says what is missing instead of sending a request.
  await page.fill("#prompt", "a house in the woods");
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("status").className === "error");
  check(/control image/.test(await page.textContent("#status")), "missing control image: " + (await page.textContent("#status")));

  // canny shows its thresholds and hides the resolution.
  await page.selectOption("#control_module", "canny");
  check(await page.isVisible("#canny_low") && !(await page.isVisible("#processor_res")), "canny shows its thresholds");
  await page.selectOption("#control_module", "normal_bae");

  await page.setInputFiles("#control_image", photo);
  await page.fill("#processor_res", "64");
  await page.evaluate(() => { // 128x64: the normal map's size at resolution 64 for a landscape photo
    for (const [id, v] of [["width", 128], ["height", 64]]) {
      const el = document.getElementById(id);
      el.max = Math.max(Number(el.max), v);
      el.value = v;
      el.dispatchEvent(new Event("input"));
    }
  });
  await page.fill("#prompt", "a house in the woods");
  await page.click("#go");
  await page.waitForSelector("#images figure.control img", { timeout: 120000 });
  await page.waitForFunction(() => [...document.querySelectorAll("#images figure img")]
    .every((i) => i.complete && i.naturalWidth > 0));
  const figures = await page.evaluate(() => [...document.querySelectorAll("#images figure")].map((f) => ({
    control: f.classList.contains("control"),
    caption: f.querySelector("figcaption").textContent,
    width: f.querySelector("img").naturalWidth,
    height: f.querySelector("img").naturalHeight,
    top: f.getBoundingClientRect().top,
  })));
  check(figures.length === 2 && !figures[0].control && figures[1].control,
    "the image and the control map: " + JSON.stringify(figures));
  if (figures.length === 2) {
    check(figures[1].caption === "Control map (normal_bae)", "control map caption: " + figures[1].caption);
    check(figures[0].width === 128 && figures[0].height === 64 && figures[1].width === 128 && figures[1].height === 64,
      "sizes: image and map 128x64");
    check(Math.abs(figures[0].top - figures[1].top) < 2, "the map is beside the image");
  }
  const done = await page.textContent("#status");
  check(/^Done: 1 image/.test(done), "status after the run: " + done);
  const params = await page.textContent("#parameters");
  check(params.includes('ControlNet: "Module: normal_bae'), "parameters name the ControlNet: " + params.split("\n").pop());
  await page.screenshot({ path: `${outDir}/serve-controlnet.png`, fullPage: true });
  // Phone width: the image and the map still fit the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 390, "nothing wider than a phone screen: " + overflow);
  await page.screenshot({ path: `${outDir}/serve-controlnet-phone.png`, fullPage: true });
  check(pageErrors.length === 0, "no errors in the page: " + pageErrors.join(" | "));
} finally {
  await browser.close();
}
process.exit(failures ? 1 : 0);
