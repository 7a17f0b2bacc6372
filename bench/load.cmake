# spotter_load: the end-to-end load and soak tool (bench/load.cc); its CI
# smoke form is the ctest load.smoke (tests/load/CMakeLists.txt).
add_executable(spotter_load ${CMAKE_CURRENT_LIST_DIR}/load.cc)
target_link_libraries(spotter_load PRIVATE spotter::server spotter::core spotter::proto gRPC::grpc++ absl::flags
                      absl::flags_parse absl::flags_usage absl::flags_usage_internal absl::synchronization
                      absl::str_format absl::time spotter_warnings)
