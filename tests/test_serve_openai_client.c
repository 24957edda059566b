// `lcm serve` driven by the official OpenAI SDK (npm `openai` at the version locked in
// tests/clients/package-lock.json; `make test` installs it with `npm ci`, and this test does so
// itself when it is missing). tests/clients/openai_client.mjs does the talking, against a server
// with --api-key, --queue 1 and a step delay: models.list/retrieve (and the 404 of an unknown
// model), images.generate with the SDK's defaults (a url this server serves, the model's native
// size), size "auto" and 1024x1024, b64_json, and the errors as the SDK types them: 400
// BadRequestError naming the field, 401 AuthenticationError, 429 RateLimitError with Retry-After.
// Skipped (exit 77, saying why) only where node or npm is missing.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "serve_process.h"
#include "testutil.h"

int main(void) {
    if (test_run("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1", NULL, 0) != 0) {
        printf("SKIPPED: node and npm are not installed (apt-get install nodejs npm)\n");
        return 77;
    }
    char cmd[4096], output[65536], sdk[1200];
    test_path(sdk, sizeof sdk, "%s/tests/clients/node_modules/openai/package.json", test_source_dir());
    if (access(sdk, R_OK) != 0) {
        snprintf(cmd, sizeof cmd, "cd '%s/tests/clients' && flock .npm-ci.lock npm ci --no-audit --no-fund 2>&1",
                 test_source_dir());
        int rc = test_run(cmd, output, sizeof output);
        if (rc != 0) fputs(output, stderr);
        CHECK(rc == 0, "%s exited %d", cmd, rc);
        if (rc != 0) return test_finish();
    }
    char model[1024];
    test_path(model, sizeof model, "%s/tiny-lcm", test_fixtures());
    server_process sp;
    if (server_start(&sp, model, "--threads 2 --queue 1 --step-delay-ms 200 --api-key sdk-test-key")) {
        snprintf(cmd, sizeof cmd, "cd '%s/tests/clients' && NO_PROXY='*' node openai_client.mjs '%s' sdk-test-key 2>&1",
                 test_source_dir(), sp.base);
        int rc = test_run(cmd, output, sizeof output);
        fputs(output, stderr);
        CHECK(rc == 0 && strstr(output, "all checks passed"), "%s exited %d", cmd, rc);
        server_stop(&sp);
    }
    return test_finish();
}
