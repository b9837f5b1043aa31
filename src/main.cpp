// medseg's entrypoint: everything happens in the library (app/cli.cpp).
#include "app/cli.h"

int main(int argc, char** argv) { return medseg::run_cli(argc, argv); }
