package llm_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/llm"
)

// An Answerer for a llama.cpp or vLLM server, plugged into the Q&A server.
func Example() {
	temp := 0.2
	a, err := llm.New(llm.Options{
		BaseURL:      "http://127.0.0.1:8080/v1",
		Model:        "qwen2.5-7b-instruct",
		APIKey:       os.Getenv("QA_LLM_API_KEY"),
		SystemPrompt: "You answer questions about our product, briefly.",
		Temperature:  &temp,
		MaxTokens:    512,
		Turns:        6,                // earlier turns sent with each question
		StallTimeout: 20 * time.Second, // a stream silent this long is ended
	})
	if err != nil {
		log.Fatal(err)
	}

	sio := socket.NewServer(nil, socketio.SetParser(socket.DefaultServerOptions()))
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{
		Answerer:      a,
		AnswerTimeout: 2 * time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer qa.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", qa.Handler())
	// http.ListenAndServe(":8080", mux)
}

// printChunks prints each streamed delta.
type printChunks struct{}

func (printChunks) WriteChunk(d string) error {
	fmt.Printf("chunk %q\n", d)
	return nil
}

// Answer streams the model's deltas to the ChunkWriter and returns the
// whole answer with its token usage. The model here is a stand-in server.
func ExampleAnswerer_Answer() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
			`{"choices":[{"index":0,"delta":{"content":"Streaming sends "}}]}`,
			`{"choices":[{"index":0,"delta":{"content":"the answer in pieces."}}]}`,
			`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}`,
			`[DONE]`,
		} {
			fmt.Fprintf(w, "data: %s\n\n", ev)
		}
	}))
	defer srv.Close()

	a, err := llm.New(llm.Options{BaseURL: srv.URL + "/v1", Model: "any", HTTPClient: srv.Client()})
	if err != nil {
		log.Fatal(err)
	}
	ans, err := a.Answer(context.Background(), socketio.Question{Text: "What is streaming?", Stream: true}, printChunks{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ans.Text)
	fmt.Println(ans.Usage.TotalTokens, "tokens")
	// Output:
	// chunk "Streaming sends "
	// chunk "the answer in pieces."
	// Streaming sends the answer in pieces.
	// 19 tokens
}
