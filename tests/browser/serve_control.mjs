// The ControlNet controls of the lcm serve page in headless Chromium, against a server started with
// --controlnet, --lora and --control-weights: the controls are shown, a photo is uploaded and
// turned into a normal map, and the result shows the image with the normal map beside it.
//
//   node serve_control.mjs http://127.0.0.1:PORT/ OUT_DIR PHOTO.png
//
// Exits 0 when every check passed; prints what failed otherwise.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, outDir, photo] = process.argv.slice(2);
// The preprocessor resolution the test asks for (the smallest the server takes, so the run is quick).
const processorRes = 64;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let failures = 0;
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures++;
}

// The photo's size from its PNG header (the signature, then the IHDR chunk: width, height).
function pngSize(path) {
  const b = readFileSync(path);
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (b.length < 24 || signature.some((v, i) => b[i] !== v) || b.toString("latin1", 12, 16) !== "IHDR")
    throw new Error(`${path} is not a PNG`);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}
// np.round: half to even.
function roundHalfEven(x) {
  const f = Math.floor(x), d = x - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}
// controlnet_aux's resize_image size (src/preprocess/normal_detector.c, detector_resize_size):
// k = resolution / min(H, W), each side round(side * k / 64) * 64.
function resizeImageSize({ width, height }, resolution) {
  const k = resolution / Math.min(height, width);
  return { width: roundHalfEven(width * k / 64) * 64, height: roundHalfEven(height * k / 64) * 64 };
}
// NormalBaeDetector's map: the photo resized to the detect resolution, then that size resized to the
// image resolution (the server uses processor_res for both).
const photoSize = pngSize(photo);
const mapSize = resizeImageSize(resizeImageSize(photoSize, processorRes), processorRes);
const sizeText = `${mapSize.width}x${mapSize.height}`;
console.log(`photo ${photoSize.width}x${photoSize.height}, normal map at resolution ${processorRes}: ${sizeText}`);

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
  await page.fill("#processor_res", String(processorRes));
  // The image at the normal map's size, so that the map is not stretched.
  const setSize = await page.evaluate((size) => {
    for (const [id, v] of [["width", size.width], ["height", size.height]]) {
      const el = document.getElementById(id);
      el.min = Math.min(Number(el.min), v);
      el.max = Math.max(Number(el.max), v);
      el.value = v;
      el.dispatchEvent(new Event("input"));
    }
    return { width: Number(document.getElementById("width").value), height: Number(document.getElementById("height").value) };
  }, mapSize);
  check(setSize.width === mapSize.width && setSize.height === mapSize.height,
    `the page's width and height are the map's ${sizeText}: ${setSize.width}x${setSize.height}`);
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
    const sizes = figures.map((f) => `${f.width}x${f.height}`);
    check(sizes[0] === sizeText && sizes[1] === sizeText, `sizes: image and map ${sizeText}: ${sizes.join(", ")}`);
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
