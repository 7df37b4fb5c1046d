"""Smoke tests of the tools the local provider installs: each runs as a batch job in a folder holding SMOKE_FILES."""

SMOKE_FILES = {
    "hello_tb.v": 'module hello_tb; initial begin $display("hello from iverilog"); $finish; end endmodule\n',
    "counter.v": "module counter(input clk, output reg [3:0] q); always @(posedge clk) q <= q + 1; endmodule\n",
    "divider.cir": "divider\nV1 in 0 1\nR1 in out 1k\nR2 out 0 1k\n.op\n.print op v(out)\n.end\n",
}
SMOKE_TESTS = {
    "iverilog": "iverilog -o hello hello_tb.v && vvp -n hello | grep 'hello from iverilog'",
    "verilator": "verilator --lint-only -Wall -Wno-DECLFILENAME -Wno-UNUSEDSIGNAL counter.v && echo 'verilator: counter.v lints clean'",
    "yosys": "yosys -q -p 'read_verilog counter.v; synth -top counter; stat' | grep -i 'number of cells'",
    "nextpnr": "nextpnr-ice40 --version 2>&1 | head -1",
    "klayout": "QT_QPA_PLATFORM=offscreen klayout -v",
    "ngspice": "ngspice -b divider.cir 2>&1 | grep -i 'out'",
    "gtkwave": "gtkwave --version | head -1",
    "magic": "magic -dnull -noconsole --version",
    "cocotb": "python -c 'import cocotb; print(\"cocotb\", cocotb.__version__)'",
}
