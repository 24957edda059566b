"""Drives `lcm serve` with the PyPI A1111 client `webuiapi` (tests/test_serve_a1111_client.c runs it).

usage: a1111_client.py basic PORT
       a1111_client.py controlnet PORT PHOTO.png

basic: a server started with --models-dir (two or more models), --max-steps 3 and --step-delay-ms,
so that a job lasts long enough to watch and interrupt; png-info reads results back. controlnet: a server with --controlnet and
--control-weights. Every check prints what it saw; the first failure raises (exit status 1).
"""
import base64
import io
import json
import sys
import threading
import time

import webuiapi
from PIL import Image


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what.split("\n")[0][:160])


def expect_error(call, status, field, what):
    try:
        call()
    except RuntimeError as e:
        code, text = e.args
        body = json.loads(text)
        check(code == status and field in body["detail"] and body["error"]["param"].startswith(field),
              f"{what}: {code} naming {field}: {body['detail']}")
        return
    raise AssertionError(f"{what}: no error")


def pixels(image):
    return image.convert("RGB").tobytes()


def basic(api):
    # What clients call at start-up and to fill their menus.
    models = api.util_get_model_names()
    check(len(models) >= 2, f"sd-models lists the --models-dir models: {models}")
    check([s["name"] for s in api.get_samplers()] == ["LCM"], "samplers: the one LCM sampler")
    check("automatic" in api.util_get_scheduler_names(), "schedulers: automatic")
    scripts = api.get_scripts()
    check(set(scripts) == {"txt2img", "img2img"}, f"scripts: {scripts}")
    check(isinstance(api.get_loras(), list), "loras: a list")
    check(api.get_sd_vae() == [], "sd-vae: none besides the models' own")
    check([u["name"] for u in api.get_upscalers()] == ["None"], "upscalers: only None")
    check(api.refresh_checkpoints() is None, "refresh-checkpoints answers null")
    memory = api.get_memory()
    check(memory["ram"]["used"] > 0 and memory["ram"]["total"] >= memory["ram"]["used"], f"memory: {memory['ram']}")
    check(api.get_cmd_flags()["api"] is True, "cmd-flags")
    options = api.get_options()
    current = api.util_get_current_model()
    check(current == options["sd_model_checkpoint"] and current in models, f"options: current model {current}")

    # txt2img with the client's defaults: 20 steps (clamped), 512x512, sampler "Euler a".
    result = api.txt2img(prompt="a lighthouse at dusk", seed=7)
    info = result.info
    check(len(result.images) == 1 and result.image.size == (512, 512), f"txt2img defaults: {result.image.size}")
    check(info["steps"] < 20 and f"Steps: {info['steps']}," in info["infotexts"][0],
          f"steps clamped and the infotext says what ran: {info['infotexts'][0]}")
    warnings = result.json["warnings"]
    check(any("steps 20" in w for w in warnings) and any("Euler a" in w for w in warnings),
          f"warnings say so: {warnings}")
    check(result.image.info.get("parameters") == info["infotexts"][0], "the PNG carries the infotext")
    # png-info reads it back (the client re-encodes the image with its text chunks, as A1111's UI sends it).
    read_back = api.png_info(result.image)
    check(read_back.info == info["infotexts"][0], f"png-info: info is the PNG's infotext: {read_back.info!r}")
    fields = read_back.parameters
    width, height = result.image.size
    check(fields["Prompt"] == "a lighthouse at dusk" and fields["Seed"] == str(info["seed"])
          and fields["Steps"] == str(info["steps"]) and fields["Size-1"] == str(width)
          and fields["Size-2"] == str(height) and fields["Model"] == info["sd_model_name"],
          f"png-info: parameters parsed as A1111 does: {fields}")
    check(len(fields.get("Model hash", "")) == 10 and fields.get("Version", "").startswith("lcm.c "),
          f"png-info: Model hash and Version: {fields.get('Model hash')}, {fields.get('Version')}")
    response = api.session.post(f"{api.baseurl}/png-info", json={"image": "AAAAAAAA"})
    check(response.status_code == 400 and response.json()["error"]["param"] == "image",
          f"png-info: bytes that are no image are a 400 naming 'image': {response.json()['detail']}")
    # The rest at 64x64: the fixture model is slow at 512x512 under a sanitizer.
    small = [api.txt2img(prompt="a lighthouse at dusk", seed=7, width=64, height=64) for _ in range(2)]
    check(pixels(small[0].image) == pixels(small[1].image), "same seed, same pixels")

    # img2img from the first result.
    result2 = api.img2img(images=[result.image], prompt="a lighthouse at night", seed=3, denoising_strength=0.6,
                          width=64, height=64)
    check(result2.image.size == (64, 64) and result2.info["denoising_strength"] == 0.6,
          f"img2img: {result2.image.size}, strength {result2.info['denoising_strength']}")

    # JPEG and WebP init images, sent as they are (webuiapi itself always re-encodes as PNG).
    for fmt in ("JPEG", "WEBP"):
        encoded = io.BytesIO()
        result.image.convert("RGB").save(encoded, format=fmt)
        payload = base64.b64encode(encoded.getvalue()).decode()
        response = api.session.post(f"{api.baseurl}/img2img", json={
            "init_images": [payload], "prompt": "a lighthouse at night", "seed": 3, "denoising_strength": 0.6,
            "width": 64, "height": 64})
        check(response.status_code == 200, f"img2img from a {fmt} init image: {response.status_code}")
        made = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
        check(made.size == (64, 64) and "Denoising strength: 0.6" in made.info.get("parameters", ""),
              f"img2img from {fmt}: {made.size}, {made.info.get('parameters', '')!r}")
        read_back = api.session.post(f"{api.baseurl}/png-info", json={"image": payload}).json()
        check(read_back["info"] == "" and read_back["parameters"]["Prompt"] == "",
              f"png-info of a {fmt} (no parameters chunk): {read_back}")

    # Fields the server cannot honour are refused by name, never silently dropped.
    expect_error(lambda: api.txt2img(prompt="x", enable_hr=True), 400, "enable_hr", "hires fix")
    expect_error(lambda: api.img2img(images=[result.image], mask_image=result.image, prompt="x"), 400, "mask", "inpainting")
    expect_error(lambda: api.txt2img(prompt="x", width=100), 400, "width", "a width that is not a multiple of 8")

    # progress during a job (with a live preview), then interrupt: the partial image comes back.
    seen = {"images": 0, "steps": set()}
    box = {}

    def run():
        box["result"] = api.txt2img(prompt="a slow job", seed=11, width=64, height=64)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = api.get_progress()
        step = progress["state"]["sampling_step"]
        if progress["current_image"]:
            seen["images"] += 1
            Image.open(io.BytesIO(__import__("base64").b64decode(progress["current_image"]))).load()
        if step:
            seen["steps"].add(step)
        if step >= 1 and seen["images"]:
            break
        time.sleep(0.05)
    check(seen["images"] > 0, f"progress carries current_image during an API job (steps seen {sorted(seen['steps'])})")
    check(api.interrupt() == {}, "interrupt answers")
    worker.join(60)
    partial = box["result"]
    check(partial.info["interrupted"] and len(partial.images) == 1 and partial.image.size == (64, 64),
          f"interrupt returns the partial image: {partial.json['warnings']}")
    check("Interrupted at step" in partial.info["infotexts"][0], "the infotext says it was interrupted")
    stopped_at = api.png_info(partial.image).parameters.get("Interrupted at step", "")
    check(stopped_at.isdigit() and 1 <= int(stopped_at) <= partial.info["steps"],
          f"png-info reads the step the partial image stopped at: {stopped_at!r}")
    check(api.get_progress()["state"]["job_count"] == 0, "nothing left running")

    # Model switching through options, as util_set_model does.
    other = next(m for m in models if m != current)
    api.util_set_model(other, find_closest=False)
    check(api.util_get_current_model() == other, f"options: switched to {other}")
    switched = api.txt2img(prompt="a lighthouse at dusk", seed=7, steps=2, width=64, height=64)
    check(switched.info["sd_model_name"] == other and f"Model: {other}" in switched.info["infotexts"][0],
          f"the next job ran on {other}")
    api.set_options({"sd_model_checkpoint": other})  # the same model: nothing to do
    check(api.util_get_current_model() == other, "setting the current model again changes nothing")
    api.util_set_model(current, find_closest=False)
    check(api.util_get_current_model() == current, f"options: back to {current}")
    per_request = api.txt2img(prompt="x", seed=1, steps=2, width=64, height=64,
                              override_settings={"sd_model_checkpoint": other})
    check(per_request.info["sd_model_name"] == other and api.util_get_current_model() == current,
          "override_settings.sd_model_checkpoint picks the model for one request")
    response = api.session.post(f"{api.baseurl}/options", json={"sd_model_checkpoint": "no-such-model"})
    check(response.status_code == 400 and "no-such-model" in response.json()["detail"],
          f"an unknown model is a 400: {response.json()['detail']}")


def controlnet(api, photo_path):
    photo = Image.open(photo_path).convert("RGB")
    check(api.controlnet_version() >= 1, "controlnet/version")
    model_list = api.controlnet_model_list()
    check(len(model_list) == 1, f"controlnet/model_list: {model_list}")
    modules = api.controlnet_module_list()
    check({"none", "canny", "normal_bae"} <= set(modules), f"controlnet/module_list: {modules}")
    detected = api.controlnet_detect([photo], module="canny", threshold_a=100, threshold_b=200)
    check(len(detected.images) == 1 and detected.image.size == photo.size, f"detect canny: {detected.image.size}")
    detected = api.controlnet_detect([photo], module="normal_bae", processor_res=64)
    check(len(detected.images) == 1, f"detect normal_bae: {detected.image.size}")

    def generate(*units):
        return api.txt2img(prompt="a room", seed=5, steps=4, width=64, height=64, cfg_scale=1.0,
                           controlnet_units=list(units))

    unit = webuiapi.ControlNetUnit(image=photo, module="canny", model=model_list[0], threshold_a=100, threshold_b=200)
    one = generate(unit)
    check(len(one.images) == 2, "a ControlNetUnit through the client's own 'ControlNet' key: image + detected map")
    if photo.size[0] != photo.size[1]:  # the client's default resize_mode is "Resize and Fill"
        check(any("resize_mode" in w for w in one.json["warnings"]), f"resize_mode is said: {one.json['warnings']}")
    halves = generate(
        webuiapi.ControlNetUnit(image=photo, module="canny", weight=0.5, threshold_a=100, threshold_b=200),
        webuiapi.ControlNetUnit(image=photo, module="canny", weight=0.5, threshold_a=100, threshold_b=200))
    check(len(halves.images) == 3 and pixels(halves.image) == pixels(one.image),
          "two units of weight 0.5 sum to one of weight 1 (MultiControlNet)")
    normal = generate(webuiapi.ControlNetUnit(image=photo, module="normal_bae", processor_res=64))
    both = generate(unit, webuiapi.ControlNetUnit(image=photo, module="normal_bae", processor_res=64))
    check(pixels(both.image) != pixels(one.image) and pixels(both.image) != pixels(normal.image),
          "canny + normal_bae units both steer the image")
    late = generate(webuiapi.ControlNetUnit(image=photo, module="canny", threshold_a=100, threshold_b=200,
                                            guidance_start=0.5))
    early = generate(webuiapi.ControlNetUnit(image=photo, module="canny", threshold_a=100, threshold_b=200,
                                             guidance_end=0.5))
    check(len({pixels(one.image), pixels(late.image), pixels(early.image)}) == 3,
          "guidance_start / guidance_end change which steps the unit steers")
    check(late.info["infotexts"][0].count("Guidance Start: 0.5") == 1, "the infotext names the guidance range")
    unit_text = api.png_info(one.image).parameters.get("ControlNet", "")
    check(unit_text.startswith("Module: canny, Model: " + model_list[0] + ", Weight: 1"),
          f"png-info: the ControlNet unit that ran, unquoted: {unit_text!r}")
    unit_texts = api.png_info(both.image).parameters
    check(unit_texts.get("ControlNet 0", "").startswith("Module: canny")
          and unit_texts.get("ControlNet 1", "").startswith("Module: normal_bae"),
          f"png-info: one field per unit: {unit_texts}")
    off = webuiapi.ControlNetUnit(image=photo, module="canny", enabled=False)
    plain = generate(unit, off)
    check(pixels(plain.image) == pixels(one.image), "a disabled unit is skipped")
    expect_error(lambda: generate(webuiapi.ControlNetUnit(image=photo, module="openpose")), 400,
                 "alwayson_scripts.ControlNet.args[0].module", "an unknown module")


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    if mode == "basic":
        basic(api)
    else:
        controlnet(api, sys.argv[3])
    print("all checks passed")


if __name__ == "__main__":
    main()
