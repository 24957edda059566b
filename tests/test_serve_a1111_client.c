// `lcm serve` driven by the real A1111 client: PyPI `webuiapi` at the version pinned (with every
// dependency) in tests/clients/requirements.txt, installed once into build/clients-venv of the
// source tree and reused (reinstalled when the requirements change). tests/clients/a1111_client.py
// does the talking:
// - server A: the fixture pipelines (every folder with a model_index.json) through --models-dir
//   with --max-loaded 1 and a step delay: txt2img with the client's defaults (20 steps clamped,
//   with a warning), img2img (also from JPEG and WebP init images), refused fields, progress with
//   current_image, interrupt returning the partial image, the start-up endpoints, model switching
//   through options, png-info reading a result's infotext back (the interrupted one's step too);
// - server C: the reference ControlNet workflow (--controlnet, --lora, --control-weights): the
//   client's own ControlNetUnit, controlnet/version, model_list, module_list, detect, summed
//   units, guidance_start/guidance_end, png-info reading the units back from the results.
// Skipped (exit 77, saying why) only where python3 with venv and pip is missing.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control_fixtures.h"
#include "serve_process.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-a1111-client-XXXXXX";

// The venv with the pinned client: created (under a lock, as several test trees share it) when
// missing or made from other requirements. False when it could not be made.
static bool prepare_venv(char *python, size_t size) {
    char venv[1200], cmd[8192], output[16384];
    test_path(venv, sizeof venv, "%s/build/clients-venv", test_source_dir());
    test_path(python, size, "%s/bin/python", venv);
    snprintf(cmd, sizeof cmd,
             "set -e; mkdir -p '%s/build'; exec 9>'%s/build/clients-venv.lock'; flock 9; "
             "req='%s/tests/clients/requirements.txt'; stamp='%s/requirements.installed'; "
             "if [ -x '%s' ] && cmp -s \"$req\" \"$stamp\"; then exit 0; fi; "
             "rm -rf '%s'; python3 -m venv '%s'; "
             "'%s' -m pip install --quiet --disable-pip-version-check --no-deps --only-binary :all: -r \"$req\"; "
             "cp \"$req\" \"$stamp\" 2>&1",
             test_source_dir(), test_source_dir(), test_source_dir(), venv, python, venv, venv, python);
    int rc = test_run(cmd, output, sizeof output);
    if (rc != 0) fputs(output, stderr);
    CHECK(rc == 0, "could not install tests/clients/requirements.txt into %s (exit %d)", venv, rc);
    return rc == 0;
}

static void run_client(const char *python, const char *args) {
    char cmd[4096], output[65536];
    snprintf(cmd, sizeof cmd, "NO_PROXY='*' '%s' '%s/tests/clients/a1111_client.py' %s 2>&1", python,
             test_source_dir(), args);
    int rc = test_run(cmd, output, sizeof output);
    fputs(output, stderr);
    CHECK(rc == 0 && strstr(output, "all checks passed"), "%s exited %d", cmd, rc);
}

static int port_of(const server_process *sp) { return atoi(strrchr(sp->base, ':') + 1); }

int main(void) {
    if (test_run("command -v python3 >/dev/null 2>&1 && python3 -m venv --help >/dev/null 2>&1 && "
                 "python3 -m pip --version >/dev/null 2>&1", NULL, 0) != 0) {
        printf("SKIPPED: python3 with venv and pip is not installed (apt-get install python3-venv python3-pip)\n");
        return 77;
    }
    char python[1300];
    if (!prepare_venv(python, sizeof python)) return test_finish();
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");

    // Every pipeline folder of the fixtures, linked into one --models-dir.
    DIR *d = opendir(root);
    struct dirent *e;
    char first[1200] = "";
    int linked = 0;
    while (d && (e = readdir(d))) {
        char index[1400], source[1200], link_path[1400];
        test_path(source, sizeof source, "%s/%s", root, e->d_name);
        test_path(index, sizeof index, "%s/model_index.json", source);
        if (e->d_name[0] == '.' || access(index, R_OK) != 0) continue;
        test_path(link_path, sizeof link_path, "%s/%s", tmpdir, e->d_name);
        CHECK(symlink(source, link_path) == 0, "symlink %s", link_path);
        if (!first[0] || strcmp(source, first) < 0) test_path(first, sizeof first, "%s", source);
        linked++;
    }
    if (d) closedir(d);
    CHECK(linked >= 2, "model switching needs two pipeline folders under %s, found %d", root, linked);

    server_process a;
    char extra[2048], args[2048];
    test_path(extra, sizeof extra, "--threads 2 --max-steps 3 --step-delay-ms 250 --models-dir '%s' --max-loaded 1", tmpdir);
    if (linked >= 2 && server_start(&a, first, extra)) {
        snprintf(args, sizeof args, "basic %d", port_of(&a));
        run_client(python, args);
        server_stop(&a);
    }

    static control_fixtures fx;
    if (control_fixtures_find(root, &fx)) {
        server_process c;
        test_path(extra, sizeof extra, "--threads 2 --controlnet '%s' %s%s%s --control-weights '%s'", fx.controlnet,
                  fx.lora[0] ? "--lora '" : "", fx.lora, fx.lora[0] ? "'" : "", fx.weights[0]);
        if (server_start(&c, fx.model, extra)) {
            snprintf(args, sizeof args, "controlnet %d '%s'", port_of(&c), fx.photo);
            run_client(python, args);
            server_stop(&c);
        }
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
