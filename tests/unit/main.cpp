// Catch2's main, alone in its translation unit so test files rebuild fast.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
