// psmctl: manage psmfs volumes and their snapshots.
//
// Every subcommand lives in its own cli/cmd_<name>.cc and registers itself
// (PSMCTL_REGISTER_COMMAND); this file only builds the top-level app, parses
// and turns CLI11's outcome into psmctl's exit codes (cli/psmctl.h). Both
// executables, psmctl and psmctl-offline, run this main.
#include <CLI/CLI.hpp>
#include <string>

#include "cli/psmctl.h"
#include "fs/control/control_protocol.h"

int main(int argc, char** argv) {
  CLI::App app{"psmctl: manage psmfs volumes and their point-in-time snapshots.", "psmctl"};
  app.set_version_flag("--version",
                       "psmctl " + std::string(psm::ctl::kSoftwareVersion) + " (control protocol " +
                           std::to_string(psm::ctl::kProtocolVersion) + ")",
                       "Print the version and exit");
  app.require_subcommand(1);
  app.footer(std::string("Run 'psmctl COMMAND --help' for a command's options.\n\n") +
             psmctl::kExitCodesFooter);
  psmctl::SetupAll(app);
  // The front end (psmctl) hands what it does not serve to psmctl-offline.
  psmctl::SetCommandLine(argc, argv);
  if (!psmctl::kOfflineEngine && !psmctl::ServedHere(app, argc, argv)) {
    return psmctl::Fail(psmctl::RunOfflineEngine());
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Our actions report failure as RuntimeError(exit code), already printed.
    if (e.get_name() == "RuntimeError") return e.get_exit_code();
    int rc = app.exit(e);  // prints help, the version, or the usage error
    return rc == 0 ? psmctl::kExitOk : psmctl::kExitUsage;
  }
  return psmctl::kExitOk;
}
