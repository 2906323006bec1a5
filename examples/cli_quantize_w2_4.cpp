// lowbit command-line tool: the quantize command's model pass for 2, 3, 4 bits (cli_quantize.hpp).
#include "cli_quantize.hpp"

namespace lowbit_cli {
LOWBIT_CLI_RUN_QUANTIZE(2)
LOWBIT_CLI_RUN_QUANTIZE(3)
LOWBIT_CLI_RUN_QUANTIZE(4)
}  // namespace lowbit_cli
