// lowbit command-line tool: the quantize command's model pass for 5, 6, 7, 8 bits (cli_quantize.hpp).
#include "cli_quantize.hpp"

namespace lowbit_cli {
LOWBIT_CLI_RUN_QUANTIZE(5)
LOWBIT_CLI_RUN_QUANTIZE(6)
LOWBIT_CLI_RUN_QUANTIZE(7)
LOWBIT_CLI_RUN_QUANTIZE(8)
}  // namespace lowbit_cli
